"""`callqc ops retry` end to end on the real S3 server, through the encrypted store every component uses."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from callqc.errors import CallErrorCode
from callqc.jobs import BatchManifest, CallStatus, JobStore, batch_id_for, job_store_from_settings
from callqc.models import CallSpec, CallState
from callqc.security.envelope import Keyring
from callqc.settings import Settings, load_settings
from operators.cli import ops_app

pytestmark = pytest.mark.integration
runner = CliRunner()


@pytest.fixture()
def jobs(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> JobStore:
    """The environment an operator's shell would have: S3 endpoint, keys and the master keyring."""
    env = {
        "CALLQC_HOME": str(settings.home),
        "CALLQC_S3__ENDPOINT": settings.s3.endpoint,
        "CALLQC_S3__ACCESS_KEY": settings.s3.access_key,
        "CALLQC_S3__SECRET_KEY": settings.s3.secret_key.get_secret_value(),
        "CALLQC_S3__BUCKET": settings.s3.bucket,
        "CALLQC_MASTER_KEYRING": Keyring.generate().to_json(),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return job_store_from_settings(load_settings())


def failed_batch(jobs: JobStore) -> BatchManifest:
    manifest = BatchManifest(
        batch_id=batch_id_for("ops", "cli"),
        request_id="cli",
        client="ops",
        request_digest="cli",
        calls=[CallSpec(call_id=c, audio_key=f"audio/{c}.wav") for c in ("ok", "broke", "noaudio")],
    )
    jobs.create_batch(manifest)
    outcome = {"ok": None, "broke": CallErrorCode.PROCESSING_FAILED, "noaudio": CallErrorCode.AUDIO_EMPTY}
    for call_id, error in outcome.items():
        state = CallState.FAILED if error else CallState.DONE
        jobs.set_status(manifest.batch_id, CallStatus(call_id=call_id, state=state, error=error, attempts=3))
    jobs.close_batch(manifest.batch_id)
    return manifest


def test_retry_requeues_processing_failures(jobs: JobStore) -> None:
    m = failed_batch(jobs)
    result = runner.invoke(ops_app, ["retry", "--failed", m.batch_id], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "re-queued 1 call(s): broke" in result.output
    assert "noaudio: AUDIO_EMPTY: input problem, not retried without --all" in result.output
    assert jobs.get_status(m.batch_id, "broke").state == CallState.QUEUED
    assert jobs.open_batches() == [m.batch_id]


def test_retry_all_dry_run_lists_both_and_changes_nothing(jobs: JobStore) -> None:
    m = failed_batch(jobs)
    result = runner.invoke(ops_app, ["retry", "--failed", m.batch_id, "--all", "--dry-run"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "would re-queue 2 call(s): broke, noaudio" in result.output
    assert jobs.get_status(m.batch_id, "noaudio").state == CallState.FAILED
    assert jobs.open_batches() == []


def test_retry_of_an_open_batch_is_refused(jobs: JobStore) -> None:
    m = failed_batch(jobs)
    jobs.store.put_bytes(jobs.open_key(m.batch_id), m.batch_id.encode())
    result = runner.invoke(ops_app, ["retry", "--failed", m.batch_id], env={"COLUMNS": "200"})
    assert result.exit_code == 1 and "still being processed" in result.output


def test_status_without_ray_shows_queue_and_coverage(jobs: JobStore) -> None:
    m = failed_batch(jobs)
    jobs.put_report(m.batch_id, "ok", b"{}")
    result = runner.invoke(ops_app, ["status", "--no-ray", "--json", "--tz", "UTC"])
    assert result.exit_code == 0, result.output
    work = json.loads(result.output)["work"]
    assert (work["open_batches"], work["received"], work["inspected"]) == (0, 3, 1)
    assert work["coverage"] == pytest.approx(1 / 3, abs=1e-4)
    table = runner.invoke(ops_app, ["status", "--no-ray", "--tz", "UTC"], env={"COLUMNS": "200"})
    assert "1/3 = 33.3%" in table.output
