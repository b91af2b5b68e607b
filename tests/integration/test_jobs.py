"""callqc.jobs.JobStore against the real rclone S3 server (one bucket per test)."""

from __future__ import annotations

import json

import pytest

from callqc.errors import CallErrorCode
from callqc.jobs import BatchManifest, CallStatus, JobStore, RequestConflict, batch_id_for
from callqc.models import CallSpec, CallState
from callqc.settings import Settings
from callqc.storage import ObjectNotFound, ObjectStore

pytestmark = pytest.mark.integration


@pytest.fixture()
def jobs(store: ObjectStore, settings: Settings) -> JobStore:
    return JobStore(store, settings.s3, io_threads=4)


def manifest(
    request_id: str = "req-1", call_ids: tuple[str, ...] = ("c1", "c2", "c3"), rejected: tuple[str, ...] = ()
) -> BatchManifest:
    calls = [CallSpec(call_id=c, audio_key=f"audio/{c}.wav") for c in call_ids]
    return BatchManifest(
        batch_id=batch_id_for("local", request_id),
        request_id=request_id,
        client="local",
        request_digest="digest:" + ",".join(call_ids + rejected),
        calls=calls,
        rejected=[
            CallStatus(call_id=c, state=CallState.FAILED, error=CallErrorCode.AUDIO_NOT_FOUND, error_message="gone")
            for c in rejected
        ],
    )


def finish(jobs: JobStore, m: BatchManifest, state: CallState = CallState.DONE) -> None:
    for spec in m.calls:
        jobs.set_status(m.batch_id, CallStatus(call_id=spec.call_id, state=state, attempts=1))


# ---- batches -------------------------------------------------------------------------------------


def test_batch_id_is_deterministic_per_client_and_request() -> None:
    assert batch_id_for("local", "r1") == batch_id_for("local", "r1")
    assert batch_id_for("local", "r1") != batch_id_for("local", "r2")
    assert batch_id_for("a", "r1") != batch_id_for("b", "r1")


def test_create_batch_stores_manifest_and_open_marker(jobs: JobStore, store: ObjectStore) -> None:
    m = manifest()
    stored, created = jobs.create_batch(m)
    assert created
    assert stored == m
    assert jobs.get_manifest(m.batch_id) == m
    assert store.exists(jobs.manifest_key(m.batch_id))
    assert jobs.open_batches() == [m.batch_id]


def test_same_manifest_again_is_not_created(jobs: JobStore) -> None:
    m = manifest()
    first, _ = jobs.create_batch(m)
    again, created = jobs.create_batch(m.model_copy(update={"created_at": "later"}))
    assert not created
    assert again == first  # the stored manifest wins, not the resubmitted copy
    assert jobs.open_batches() == [m.batch_id]


def test_different_digest_is_a_conflict(jobs: JobStore) -> None:
    m = manifest()
    jobs.create_batch(m)
    with pytest.raises(RequestConflict, match="req-1"):
        jobs.create_batch(m.model_copy(update={"request_digest": "other"}))
    assert jobs.get_manifest(m.batch_id) == m  # untouched


def test_missing_open_marker_is_repaired_for_an_incomplete_batch(jobs: JobStore) -> None:
    m = manifest()
    jobs.create_batch(m)
    jobs.close_batch(m.batch_id)
    assert jobs.open_batches() == []
    _, created = jobs.create_batch(m)
    assert not created
    assert jobs.open_batches() == [m.batch_id]


def test_complete_batch_is_not_reopened(jobs: JobStore) -> None:
    m = manifest()
    jobs.create_batch(m)
    finish(jobs, m)
    jobs.close_batch(m.batch_id)
    _, created = jobs.create_batch(m)
    assert not created
    assert jobs.open_batches() == []


def test_batch_of_only_rejections_is_never_open(jobs: JobStore) -> None:
    m = manifest(call_ids=(), rejected=("bad1", "bad2"))
    _, created = jobs.create_batch(m)
    assert created
    assert jobs.open_batches() == []
    assert jobs.batch_complete(m)


def test_unknown_manifest_is_none(jobs: JobStore) -> None:
    assert jobs.get_manifest("bnope") is None


# ---- per-call status ---------------------------------------------------------------------------


def test_statuses_default_to_queued(jobs: JobStore) -> None:
    m = manifest()
    jobs.create_batch(m)
    statuses = jobs.statuses(m)
    assert [s.call_id for s in statuses] == ["c1", "c2", "c3"]
    assert all(s.state == CallState.QUEUED and s.attempts == 0 and s.error is None for s in statuses)
    assert all(s.updated_at == m.created_at for s in statuses)
    unset = jobs.get_status(m.batch_id, "c2")
    assert (unset.call_id, unset.state, unset.attempts, unset.report_key) == ("c2", CallState.QUEUED, 0, "")


def test_statuses_reflect_set_status_and_put_rejections_first(jobs: JobStore) -> None:
    m = manifest(call_ids=("c1", "c2", "c3"), rejected=("r1",))
    jobs.create_batch(m)
    jobs.set_status(m.batch_id, CallStatus(call_id="c2", state=CallState.RUNNING, attempts=1))
    failed = CallStatus(
        call_id="c3", state=CallState.FAILED, error=CallErrorCode.AUDIO_UNDECODABLE, error_message="junk", attempts=1
    )
    jobs.set_status(m.batch_id, failed)
    statuses = jobs.statuses(m)
    assert [(s.call_id, s.state) for s in statuses] == [
        ("r1", CallState.FAILED),
        ("c1", CallState.QUEUED),
        ("c2", CallState.RUNNING),
        ("c3", CallState.FAILED),
    ]
    assert statuses[0].error == CallErrorCode.AUDIO_NOT_FOUND
    assert (statuses[3].error, statuses[3].error_message, statuses[3].attempts) == (
        CallErrorCode.AUDIO_UNDECODABLE,
        "junk",
        1,
    )
    assert jobs.get_status(m.batch_id, "c3").error == CallErrorCode.AUDIO_UNDECODABLE


def test_set_status_overwrites_and_stamps_time(jobs: JobStore) -> None:
    m = manifest(call_ids=("c1",))
    jobs.create_batch(m)
    status = CallStatus(call_id="c1", state=CallState.RUNNING, attempts=1, updated_at="old")
    jobs.set_status(m.batch_id, status)
    assert status.updated_at != "old"
    jobs.set_status(m.batch_id, CallStatus(call_id="c1", state=CallState.DONE, attempts=1, report_key="k"))
    got = jobs.get_status(m.batch_id, "c1")
    assert (got.state, got.report_key) == (CallState.DONE, "k")


def test_batch_complete(jobs: JobStore) -> None:
    m = manifest(call_ids=("c1", "c2"), rejected=("r1",))
    jobs.create_batch(m)
    assert not jobs.batch_complete(m)
    jobs.set_status(m.batch_id, CallStatus(call_id="c1", state=CallState.DONE))
    jobs.set_status(m.batch_id, CallStatus(call_id="c2", state=CallState.RUNNING))
    assert not jobs.batch_complete(m)
    jobs.set_status(m.batch_id, CallStatus(call_id="c2", state=CallState.FAILED, error=CallErrorCode.PROCESSING_FAILED))
    assert jobs.batch_complete(m)


def test_statuses_of_many_calls_keep_manifest_order(jobs: JobStore) -> None:
    ids = tuple(f"call-{i:03d}" for i in range(40))
    m = manifest(call_ids=ids)
    jobs.create_batch(m)
    for i in range(0, 40, 3):
        jobs.set_status(m.batch_id, CallStatus(call_id=ids[i], state=CallState.DONE))
    statuses = jobs.statuses(m)
    assert [s.call_id for s in statuses] == list(ids)
    assert [s.state == CallState.DONE for s in statuses] == [i % 3 == 0 for i in range(40)]


# ---- reports -------------------------------------------------------------------------------------


def test_put_and_get_report(jobs: JobStore, store: ObjectStore) -> None:
    data = json.dumps({"call_id": "c1", "verdict": "pass"}).encode()
    key = jobs.put_report("b1", "c1", data)
    assert key == jobs.report_key("b1", "c1")
    assert store.get_bytes(key) == data
    assert jobs.get_report("c1", "b1") == data
    assert jobs.get_report("c1") == data
    assert store.get_json(jobs.latest_report_pointer("c1")) == {"batch_id": "b1", "key": key}


def test_latest_pointer_follows_the_newest_batch(jobs: JobStore) -> None:
    jobs.put_report("b1", "c1", b'{"v":1}')
    jobs.put_report("b2", "c1", b'{"v":2}')
    assert jobs.get_report("c1") == b'{"v":2}'
    assert jobs.get_report("c1", "b1") == b'{"v":1}'


def test_unknown_report_is_object_not_found(jobs: JobStore) -> None:
    with pytest.raises(ObjectNotFound):
        jobs.get_report("nobody")
    jobs.put_report("b1", "c1", b"{}")
    with pytest.raises(ObjectNotFound):
        jobs.get_report("c1", "b-other")
    with pytest.raises(ObjectNotFound):
        jobs.get_report("c2", "b1")
