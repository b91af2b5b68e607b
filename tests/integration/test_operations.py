"""callqc.operations (retry, queue depth, coverage) on the real rclone S3 server, one bucket per test."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from callqc.errors import CallErrorCode
from callqc.jobs import BatchManifest, CallStatus, JobStore, batch_id_for
from callqc.models import CallSpec, CallState
from callqc.operations import (
    BatchNotFound,
    BatchStillOpen,
    batches_of_day,
    daily_coverage,
    queue_depth,
    retry_failed,
)
from callqc.settings import Settings
from callqc.storage import ObjectStore

pytestmark = pytest.mark.integration


@pytest.fixture()
def jobs(store: ObjectStore, settings: Settings) -> JobStore:
    return JobStore(store, settings.s3, io_threads=4)


def make_batch(
    jobs: JobStore,
    request_id: str,
    call_ids: tuple[str, ...],
    *,
    rejected: tuple[str, ...] = (),
    created_at: str | None = None,
) -> BatchManifest:
    manifest = BatchManifest(
        batch_id=batch_id_for("ops", request_id),
        request_id=request_id,
        client="ops",
        request_digest=request_id,
        calls=[CallSpec(call_id=c, audio_key=f"audio/{c}.wav") for c in call_ids],
        rejected=[
            CallStatus(call_id=c, state=CallState.FAILED, error=CallErrorCode.INVALID_CALL, error_message="bad id")
            for c in rejected
        ],
        **({"created_at": created_at} if created_at else {}),
    )
    jobs.create_batch(manifest)
    return manifest


def set_state(
    jobs: JobStore, batch_id: str, call_id: str, state: CallState, error: CallErrorCode | None = None
) -> None:
    jobs.set_status(batch_id, CallStatus(call_id=call_id, state=state, error=error, error_message="x", attempts=3))


def finish(jobs: JobStore, manifest: BatchManifest, failures: dict[str, CallErrorCode]) -> None:
    """Every call terminal (reports for the DONE ones), batch closed: what the dispatcher leaves behind."""
    for spec in manifest.calls:
        if spec.call_id in failures:
            set_state(jobs, manifest.batch_id, spec.call_id, CallState.FAILED, failures[spec.call_id])
        else:
            jobs.put_report(manifest.batch_id, spec.call_id, b"{}")
            set_state(jobs, manifest.batch_id, spec.call_id, CallState.DONE)
    jobs.close_batch(manifest.batch_id)


# ---- retry ----------------------------------------------------------------------------------------------------


def test_retry_requeues_processing_failures_only_and_reopens(jobs: JobStore) -> None:
    m = make_batch(jobs, "r1", ("ok", "broke", "noaudio"), rejected=("badid",))
    finish(jobs, m, {"broke": CallErrorCode.PROCESSING_FAILED, "noaudio": CallErrorCode.AUDIO_NOT_FOUND})

    result = retry_failed(jobs, m.batch_id)

    assert result.requeued == ["broke"]
    assert set(result.skipped) == {"noaudio", "badid"}
    assert "--all" in result.skipped["noaudio"]
    assert jobs.open_batches() == [m.batch_id]
    again = jobs.get_status(m.batch_id, "broke")
    assert again.state == CallState.QUEUED
    assert again.attempts == 0 and again.error is None
    assert "PROCESSING_FAILED" in again.error_message
    assert jobs.get_status(m.batch_id, "noaudio").state == CallState.FAILED
    assert jobs.get_status(m.batch_id, "ok").state == CallState.DONE


def test_retry_all_includes_audio_failures_but_never_intake_rejections(jobs: JobStore) -> None:
    m = make_batch(jobs, "r2", ("broke", "noaudio"), rejected=("badid",))
    finish(jobs, m, {"broke": CallErrorCode.PROCESSING_FAILED, "noaudio": CallErrorCode.AUDIO_UNDECODABLE})

    result = retry_failed(jobs, m.batch_id, include_all=True)

    assert sorted(result.requeued) == ["broke", "noaudio"]
    assert list(result.skipped) == ["badid"]
    assert jobs.get_status(m.batch_id, "noaudio").state == CallState.QUEUED


def test_dry_run_changes_nothing(jobs: JobStore) -> None:
    m = make_batch(jobs, "r3", ("broke",))
    finish(jobs, m, {"broke": CallErrorCode.PROCESSING_FAILED})

    result = retry_failed(jobs, m.batch_id, dry_run=True)

    assert result.requeued == ["broke"] and result.dry_run
    assert jobs.get_status(m.batch_id, "broke").state == CallState.FAILED
    assert jobs.open_batches() == []


def test_nothing_to_retry_leaves_the_batch_closed(jobs: JobStore) -> None:
    m = make_batch(jobs, "r4", ("ok",))
    finish(jobs, m, {})
    assert retry_failed(jobs, m.batch_id).requeued == []
    assert jobs.open_batches() == []


def test_retry_refuses_open_and_unknown_batches(jobs: JobStore) -> None:
    m = make_batch(jobs, "r5", ("a",))
    with pytest.raises(BatchStillOpen, match="still being processed"):
        retry_failed(jobs, m.batch_id)
    with pytest.raises(BatchNotFound, match="nosuch"):
        retry_failed(jobs, "nosuch")


# ---- queue depth ----------------------------------------------------------------------------------------------


def test_queue_depth_counts_unfinished_calls_of_open_batches(jobs: JobStore) -> None:
    m1 = make_batch(jobs, "q1", ("a", "b", "c"))
    set_state(jobs, m1.batch_id, "a", CallState.RUNNING)
    set_state(jobs, m1.batch_id, "b", CallState.DONE)
    make_batch(jobs, "q2", ("d", "e"))
    closed = make_batch(jobs, "q3", ("f",))
    finish(jobs, closed, {})

    depth = queue_depth(jobs)

    assert (depth.open_batches, depth.queued_calls, depth.running_calls) == (2, 3, 1)
    assert depth.pending_calls == 4


# ---- coverage -------------------------------------------------------------------------------------------------


def test_coverage_counts_the_banks_day_and_recent_reports(jobs: JobStore) -> None:
    shanghai = timezone(timedelta(hours=8))
    now = datetime.now(UTC)
    today = now.astimezone(shanghai).date()
    todays = make_batch(jobs, "c1", ("a", "b", "c"), rejected=("x",))
    jobs.put_report(todays.batch_id, "a", b"{}")
    jobs.put_report(todays.batch_id, "b", b"{}")
    # created (by its own clock) yesterday in Shanghai: not part of today's coverage
    yesterday = (datetime.combine(today, datetime.min.time(), tzinfo=shanghai) - timedelta(minutes=1)).astimezone(UTC)
    old = make_batch(jobs, "c2", ("d",), created_at=yesterday.isoformat())
    jobs.put_report(old.batch_id, "d", b"{}")

    assert [m.batch_id for m in batches_of_day(jobs, today, shanghai)] == [todays.batch_id]
    cov = daily_coverage(jobs, today, shanghai, now=now + timedelta(seconds=5), window_minutes=10)

    assert (cov.batches, cov.received, cov.inspected, cov.rejected) == (1, 4, 2, 1)
    assert cov.ratio == pytest.approx(0.5)
    # the old batch is still open, so its fresh report counts towards throughput: 3 reports / 10 min
    assert cov.calls_per_minute == pytest.approx(0.3)


def test_coverage_of_an_empty_day_has_no_ratio(jobs: JobStore) -> None:
    cov = daily_coverage(jobs, date(2001, 1, 1), UTC)
    assert (cov.received, cov.inspected, cov.ratio) == (0, 0, None)
