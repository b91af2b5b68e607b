"""The real grpc.aio gateway (callqc.gateway.server.start_server) on a loopback socket, real S3 behind it.

The server runs on its own event loop in a background thread; tests talk to it with CallQCClient.
"""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from callqc.client import CallQCClient
from callqc.errors import CallErrorCode
from callqc.jobs import BatchManifest, CallStatus, JobStore
from callqc.models import CallSpec, CallState, Finding, Role, Segment, Severity
from callqc.report import Versions, build_report
from callqc.settings import Settings
from callqc.storage import ObjectStore
from callqc.v1 import callqc_pb2 as pb

from .conftest import GUARD_SECONDS, GatewayFactory, code_of

pytestmark = pytest.mark.integration


def upload_raw(client: CallQCClient, messages: list[pb.UploadAudioRequest]) -> pb.UploadAudioResponse:
    return client.stub.UploadAudio(iter(messages), timeout=GUARD_SECONDS)


def audio_bytes(seed: int = 0, size: int = 2048) -> bytes:
    return np.random.default_rng(seed).bytes(size)  # the gateway does not decode: any bytes are "audio"


def spec(call_id: str, audio_key: str, **fields: object) -> CallSpec:
    return CallSpec(call_id=call_id, audio_key=audio_key, **fields)


# ---- UploadAudio -------------------------------------------------------------------------------------


def test_upload_is_content_addressed(client: CallQCClient, store: ObjectStore, settings: Settings) -> None:
    data = audio_bytes(1, 1_300_000)  # three chunks from the client
    reply = client.upload_bytes(data, "call.wav")
    sha = hashlib.sha256(data).hexdigest()
    assert (reply.audio_key, reply.sha256, reply.size) == (f"{settings.s3.audio_prefix}uploads/{sha}", sha, len(data))
    assert store.get_bytes(reply.audio_key) == data
    info = store.stat(reply.audio_key)
    assert info is not None
    assert info.metadata.get("sha256") == sha
    again = client.upload_bytes(data, "other-name.wav")
    assert again.audio_key == reply.audio_key


def test_upload_without_header(client: CallQCClient, store: ObjectStore) -> None:
    data = audio_bytes(2)
    reply = upload_raw(client, [pb.UploadAudioRequest(chunk=data[:1000]), pb.UploadAudioRequest(chunk=data[1000:])])
    assert reply.sha256 == hashlib.sha256(data).hexdigest()
    assert store.get_bytes(reply.audio_key) == data


def test_upload_with_wrong_sha256_is_data_loss(client: CallQCClient, store: ObjectStore, settings: Settings) -> None:
    data = audio_bytes(3)
    header = pb.UploadHeader(filename="x.wav", sha256="0" * 64, size=len(data))
    messages = [pb.UploadAudioRequest(header=header), pb.UploadAudioRequest(chunk=data)]
    assert code_of(lambda: upload_raw(client, messages)) == grpc.StatusCode.DATA_LOSS
    assert store.list_keys(settings.s3.audio_prefix) == []


def test_upload_with_wrong_size_is_data_loss(client: CallQCClient) -> None:
    data = audio_bytes(4)
    header = pb.UploadHeader(sha256=hashlib.sha256(data).hexdigest(), size=len(data) + 1)
    messages = [pb.UploadAudioRequest(header=header), pb.UploadAudioRequest(chunk=data)]
    assert code_of(lambda: upload_raw(client, messages)) == grpc.StatusCode.DATA_LOSS


def test_upload_over_the_cap_is_invalid(make_gateway: GatewayFactory, store: ObjectStore, settings: Settings) -> None:
    capped = make_gateway(gateway={"upload_max_bytes": 1000})
    assert capped.upload_bytes(audio_bytes(5, 1000)).size == 1000  # the cap itself is allowed
    assert code_of(lambda: capped.upload_bytes(audio_bytes(6, 1001))) == grpc.StatusCode.INVALID_ARGUMENT
    assert len(store.list_keys(settings.s3.audio_prefix)) == 1


@pytest.mark.parametrize(
    "messages",
    [
        pytest.param([], id="nothing"),
        pytest.param([pb.UploadAudioRequest(header=pb.UploadHeader(filename="x"))], id="header-only"),
        pytest.param(
            [pb.UploadAudioRequest(chunk=b"ab"), pb.UploadAudioRequest(header=pb.UploadHeader())], id="header-late"
        ),
        pytest.param([pb.UploadAudioRequest(chunk=b"ab"), pb.UploadAudioRequest()], id="empty-message"),
    ],
)
def test_malformed_upload_is_invalid(client: CallQCClient, messages: list[pb.UploadAudioRequest]) -> None:
    assert code_of(lambda: upload_raw(client, messages)) == grpc.StatusCode.INVALID_ARGUMENT


def test_upload_with_a_chinese_filename(client: CallQCClient, store: ObjectStore) -> None:
    data = audio_bytes(7)
    reply = client.upload_bytes(data, "催收通话_张三.wav")
    assert store.get_bytes(reply.audio_key) == data


# ---- SubmitBatch -------------------------------------------------------------------------------------


@pytest.fixture()
def audio_key(client: CallQCClient) -> str:
    return client.upload_bytes(audio_bytes(10), "a.wav").audio_key


@pytest.mark.parametrize("request_id", ["", "r" * 129])
def test_submit_needs_a_request_id(client: CallQCClient, audio_key: str, request_id: str) -> None:
    call = lambda: client.submit(request_id, [spec("c1", audio_key)])  # noqa: E731
    assert code_of(call) == grpc.StatusCode.INVALID_ARGUMENT


def test_submit_needs_calls(client: CallQCClient) -> None:
    assert code_of(lambda: client.submit("r1", [])) == grpc.StatusCode.INVALID_ARGUMENT


def test_submit_caps_calls_per_batch(make_gateway: GatewayFactory, jobs: JobStore) -> None:
    capped = make_gateway(gateway={"max_calls_per_batch": 3})
    key = capped.upload_bytes(audio_bytes(11)).audio_key
    assert capped.submit("ok", [spec(f"c{i}", key) for i in range(3)]).created
    too_many = [spec(f"c{i}", key) for i in range(4)]
    assert code_of(lambda: capped.submit("too-many", too_many)) == grpc.StatusCode.INVALID_ARGUMENT
    assert len(jobs.open_batches()) == 1


def test_submit_rejects_duplicate_call_ids(client: CallQCClient, audio_key: str, jobs: JobStore) -> None:
    calls = [spec("c1", audio_key), spec("c2", audio_key), spec("c1", audio_key)]
    with pytest.raises(grpc.RpcError) as info:
        client.submit("dups", calls)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "c1" in info.value.details()
    assert jobs.open_batches() == []


def test_submit_records_per_call_problems(client: CallQCClient, audio_key: str, jobs: JobStore) -> None:
    request = pb.SubmitBatchRequest(
        request_id="mixed",
        calls=[
            pb.CallInput(call_id="good1", audio_key=audio_key),
            pb.CallInput(call_id="missing", audio_key="audio/not-there.wav"),
            pb.CallInput(
                call_id="naive-time",
                audio_key=audio_key,
                metadata=pb.CallMetadata(call_started_at="2026-11-20T22:15:00"),
            ),
            pb.CallInput(call_id="bad id!", audio_key=audio_key),
            pb.CallInput(call_id="outside", audio_key="jobs/open/x"),
            pb.CallInput(call_id="good2", audio_key=audio_key, channel_layout=pb.CHANNEL_LAYOUT_MONO, language="en"),
        ],
    )
    reply = client.stub.SubmitBatch(request, timeout=GUARD_SECONDS)
    assert reply.created
    assert (reply.counts.total, reply.counts.queued, reply.counts.failed) == (6, 2, 4)
    errors = {r.call_id: (r.state, pb.CallError.Name(r.error)) for r in reply.rejected}
    assert errors == {
        "missing": (pb.CALL_STATE_FAILED, "CALL_ERROR_AUDIO_NOT_FOUND"),
        "naive-time": (pb.CALL_STATE_FAILED, "CALL_ERROR_INVALID_METADATA"),
        "bad id!": (pb.CALL_STATE_FAILED, "CALL_ERROR_INVALID_CALL"),
        "outside": (pb.CALL_STATE_FAILED, "CALL_ERROR_INVALID_CALL"),
    }
    assert all(r.error_message for r in reply.rejected)

    batch = client.get_batch(reply.batch_id)
    assert batch.request_id == "mixed"
    assert (batch.counts.total, batch.counts.queued, batch.counts.failed) == (6, 2, 4)
    assert [c.call_id for c in batch.calls][-2:] == ["good1", "good2"]  # rejections come first
    assert {c.call_id for c in batch.calls if c.state == pb.CALL_STATE_QUEUED} == {"good1", "good2"}
    manifest = jobs.get_manifest(reply.batch_id)
    assert manifest is not None
    assert [c.call_id for c in manifest.calls] == ["good1", "good2"]
    assert manifest.calls[1].language == "en"
    assert jobs.open_batches() == [reply.batch_id]


def test_audio_over_the_byte_cap_is_rejected_at_intake(make_gateway: GatewayFactory) -> None:
    small = make_gateway(audio={"max_bytes": 100})
    key = small.upload_bytes(audio_bytes(12, 101)).audio_key
    reply = small.submit("big", [spec("big", key)])
    assert [(r.call_id, pb.CallError.Name(r.error)) for r in reply.rejected] == [("big", "CALL_ERROR_AUDIO_TOO_LARGE")]
    assert (reply.counts.queued, reply.counts.failed) == (0, 1)


def test_same_request_id_returns_the_same_batch(client: CallQCClient, audio_key: str, jobs: JobStore) -> None:
    calls = [spec("c1", audio_key), spec("c2", "audio/missing.wav")]
    first = client.submit("again", calls)
    second = client.submit("again", calls)
    assert first.created and not second.created
    assert second.batch_id == first.batch_id
    assert second.counts == first.counts
    assert list(second.rejected) == list(first.rejected)
    jobs.close_batch(first.batch_id)  # lost marker: the resubmission repairs it
    assert not client.submit("again", calls).created
    assert jobs.open_batches() == [first.batch_id]


def test_same_request_id_with_other_calls_is_already_exists(client: CallQCClient, audio_key: str) -> None:
    client.submit("taken", [spec("c1", audio_key)])
    assert code_of(lambda: client.submit("taken", [spec("c2", audio_key)])) == grpc.StatusCode.ALREADY_EXISTS
    # ... and the lock released after the conflict does not block a correct retry
    assert not client.submit("taken", [spec("c1", audio_key)]).created


def test_nan_amount_rejects_only_that_call(client: CallQCClient, audio_key: str) -> None:
    request = pb.SubmitBatchRequest(
        request_id="nan",
        calls=[
            pb.CallInput(call_id="ok", audio_key=audio_key),
            pb.CallInput(
                call_id="nan",
                audio_key=audio_key,
                metadata=pb.CallMetadata(ledger=pb.Ledger(amount_due="nan", overdue_days=1)),
            ),
        ],
    )
    reply = client.stub.SubmitBatch(request, timeout=GUARD_SECONDS)  # raises: UNKNOWN
    assert [(r.call_id, pb.CallError.Name(r.error)) for r in reply.rejected] == [("nan", "CALL_ERROR_INVALID_METADATA")]


def test_infinite_amount_rejects_only_that_call(client: CallQCClient, audio_key: str) -> None:
    request = pb.SubmitBatchRequest(
        request_id="inf",
        calls=[
            pb.CallInput(call_id="ok", audio_key=audio_key),
            pb.CallInput(
                call_id="inf",
                audio_key=audio_key,
                metadata=pb.CallMetadata(ledger=pb.Ledger(amount_due="inf", overdue_days=1)),
            ),
        ],
    )
    reply = client.stub.SubmitBatch(request, timeout=GUARD_SECONDS)
    try:
        batch = client.get_batch(reply.batch_id)
    except grpc.RpcError as err:
        raise AssertionError(f"GetBatch failed: {err.code()} {err.details()}") from err
    assert {c.call_id: c.state for c in batch.calls} == {"inf": pb.CALL_STATE_FAILED, "ok": pb.CALL_STATE_QUEUED}


# ---- GetBatch / WatchBatch ---------------------------------------------------------------------------


@pytest.mark.parametrize("batch_id", ["bdoesnotexist", ""])
def test_get_unknown_batch_is_not_found(client: CallQCClient, batch_id: str) -> None:
    assert code_of(lambda: client.get_batch(batch_id)) == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: next(iter(client.watch(batch_id, GUARD_SECONDS)))) == grpc.StatusCode.NOT_FOUND


def test_watch_streams_changes_until_complete(client: CallQCClient, audio_key: str, jobs: JobStore) -> None:
    reply = client.submit("watch", [spec("c1", audio_key), spec("c2", audio_key), spec("gone", "audio/missing.wav")])
    batch_id = reply.batch_id
    stream = client.watch(batch_id, timeout=GUARD_SECONDS)

    first = [next(stream) for _ in range(3)]  # one event per call, as they are now
    assert {e.call.call_id: e.call.state for e in first} == {
        "gone": pb.CALL_STATE_FAILED,
        "c1": pb.CALL_STATE_QUEUED,
        "c2": pb.CALL_STATE_QUEUED,
    }
    assert not any(e.complete for e in first)
    assert first[0].counts.total == 3

    jobs.set_status(batch_id, CallStatus(call_id="c1", state=CallState.RUNNING, attempts=1))
    running = next(stream)
    assert (running.call.call_id, running.call.state, running.call.attempts) == ("c1", pb.CALL_STATE_RUNNING, 1)
    assert (running.counts.running, running.counts.queued) == (1, 1)
    assert not running.complete

    jobs.set_status(batch_id, CallStatus(call_id="c1", state=CallState.DONE, attempts=1, report_key="k"))
    jobs.set_status(
        batch_id,
        CallStatus(call_id="c2", state=CallState.FAILED, error=CallErrorCode.AUDIO_UNDECODABLE, error_message="junk"),
    )
    rest = list(stream)  # the server ends the stream after the complete event
    assert rest[-1].complete
    assert not rest[-1].HasField("call")
    counts = rest[-1].counts
    assert (counts.total, counts.queued, counts.running, counts.done, counts.failed) == (3, 0, 0, 1, 2)
    last = {e.call.call_id: e.call for e in rest if e.HasField("call")}
    assert last["c1"].state == pb.CALL_STATE_DONE
    assert last["c2"].state == pb.CALL_STATE_FAILED
    assert pb.CallError.Name(last["c2"].error) == "CALL_ERROR_AUDIO_UNDECODABLE"
    assert sum(e.complete for e in rest) == 1


def test_watch_of_a_finished_batch_completes_at_once(client: CallQCClient) -> None:
    reply = client.submit("all-bad", [spec("x", "audio/missing.wav")])
    events = list(client.watch(reply.batch_id, timeout=GUARD_SECONDS))
    assert [(e.call.call_id, e.complete) for e in events] == [("x", False), ("", True)]


# ---- GetReport ---------------------------------------------------------------------------------------


def store_report(jobs: JobStore, batch_id: str, call_id: str, owner: str = "system-a") -> bytes:
    """A stored report, in a batch (manifest) owned by ``owner``."""
    if jobs.get_manifest(batch_id) is None:
        spec = CallSpec(call_id=call_id, audio_key="audio/uploads/" + "ab" * 32)
        manifest = BatchManifest(batch_id=batch_id, request_id=batch_id, client=owner, request_digest="d", calls=[spec])
        jobs.create_batch(manifest)
    report = build_report(
        CallSpec(call_id=call_id, audio_key="audio/uploads/" + "ab" * 32),
        batch_id,
        audio_sha256="ab" * 32,
        duration=42.0,
        transcript=[Segment(id="s0001", role=Role.AGENT, start=0.0, end=2.0, text="您好，这里是催收")],
        findings=[Finding(rule_id="F01", name="threat", severity=Severity.S0, segment_ids=["s0001"], start=0.5)],
        versions=Versions(pipeline="callqc/0.1.0", asr_model="m", rule_pack="p", speakers="s"),
        stage_seconds={"asr": 1.5},
    )
    data = report.model_dump_json().encode()
    jobs.put_report(batch_id, call_id, data)
    return data


def test_get_report(client: CallQCClient, jobs: JobStore) -> None:
    old = store_report(jobs, "bold", "c1")
    new = store_report(jobs, "bnew", "c1")
    latest = client.get_report("c1")
    assert latest.report_json.encode() == new
    assert (latest.report.call_id, latest.report.batch_id, latest.report.verdict) == ("c1", "bnew", "fail")
    assert latest.report.transcript[0].text == "您好，这里是催收"
    assert latest.report.findings[0].segment_ids == ["s0001"]
    assert dict(latest.report.stage_seconds) == {"asr": 1.5}
    assert client.get_report("c1", "bold").report_json.encode() == old


def test_get_report_not_found(client: CallQCClient, jobs: JobStore) -> None:
    assert code_of(lambda: client.get_report("nobody")) == grpc.StatusCode.NOT_FOUND
    store_report(jobs, "b1", "c1")
    assert code_of(lambda: client.get_report("c1", "b2")) == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: client.get_report("")) == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("rpc", ["get_batch", "get_report"])
def test_dot_dot_ids_are_a_client_error(client: CallQCClient, rpc: str) -> None:
    call = {"get_batch": lambda: client.get_batch(".."), "get_report": lambda: client.get_report("c1", "..")}[rpc]
    assert code_of(call) in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)


def test_full_backlog_answers_resource_exhausted_and_a_backing_off_client_gets_in(
    make_gateway: GatewayFactory, jobs: JobStore
) -> None:
    """Backpressure: over max_backlog_calls new batches are refused; once calls finish, the retry succeeds."""
    client = make_gateway({"max_backlog_calls": 2, "backlog_refresh_seconds": 0.05})
    key = client.upload_bytes(audio_bytes(11), "bp.wav").audio_key
    first = client.submit("bp-1", [spec("a", key), spec("b", key)])
    with pytest.raises(grpc.RpcError) as err:
        client.submit("bp-2", [spec("c", key)])
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "backlog is full" in err.value.details()
    assert client.submit("bp-1", [spec("a", key), spec("b", key)]).batch_id == first.batch_id  # replay still answers
    for call_id in ("a", "b"):
        jobs.set_status(first.batch_id, CallStatus(call_id=call_id, state=CallState.DONE))
    jobs.close_batch(first.batch_id)
    reply = client.submit("bp-2", [spec("c", key)], max_backoff_seconds=GUARD_SECONDS)
    assert reply.created and reply.counts.queued == 1


def test_concurrent_submissions_cannot_overshoot_the_backlog_cap(make_gateway: GatewayFactory) -> None:
    """Six batches of 2 sent at the same moment against a cap of 2: exactly one gets in, the rest are
    RESOURCE_EXHAUSTED (the CI once saw all of them admitted while the first was still being stored)."""
    client = make_gateway({"max_backlog_calls": 2, "backlog_refresh_seconds": 3600})
    key = client.upload_bytes(audio_bytes(12), "race.wav").audio_key
    start = threading.Barrier(6)

    def submit(n: int) -> grpc.StatusCode:
        start.wait()
        try:
            client.submit(f"race-{n}", [spec(f"r{n}a", key), spec(f"r{n}b", key)])
        except grpc.RpcError as err:
            return err.code()
        return grpc.StatusCode.OK

    with ThreadPoolExecutor(max_workers=6) as pool:
        codes = list(pool.map(submit, range(6)))
    assert sorted(c.name for c in codes) == ["OK"] + ["RESOURCE_EXHAUSTED"] * 5, codes


def test_intake_checks_each_distinct_key_and_never_assumes_an_unseen_upload_exists(
    client: CallQCClient, jobs: JobStore
) -> None:
    key = client.upload_bytes(audio_bytes(13), "known.wav").audio_key  # the gateway knows this one's size
    never_uploaded = "audio/uploads/" + "0" * 64
    reply = client.submit("known-keys", [spec("k1", key), spec("k2", key), spec("k3", never_uploaded), spec("k4", key)])
    assert reply.counts.queued == 3 and reply.counts.failed == 1
    [rejected] = reply.rejected
    assert (rejected.call_id, pb.CallError.Name(rejected.error)) == ("k3", "CALL_ERROR_AUDIO_NOT_FOUND")


def test_without_the_intake_check_a_missing_audio_key_is_queued_for_audioprep_to_fail(
    make_gateway: GatewayFactory,
) -> None:
    client = make_gateway({"check_audio_on_submit": False})
    reply = client.submit("no-check", [spec("ghost", "audio/missing.wav")])
    assert (reply.counts.queued, reply.counts.failed) == (1, 0)
