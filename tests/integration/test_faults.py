"""Fault injection on the real local stack: every call is inspected exactly once despite crashes.

One LocalStack for the module (real rclone S3, Ray Serve, gateway process, whisper). Each case submits the
four sample calls under call ids of its own, breaks one component while the batch is in flight, and then
checks that the batch completes with every call DONE and exactly one report object per call under
``reports/{batch}/`` (read with a raw ObjectStore, as the S3 server holds them). Waits are bounded guards,
never asserted on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator

import grpc
import psutil
import pytest

from callqc.client import CallQCClient, load_calls
from callqc.models import CallSpec
from callqc.s3server import LocalS3Server, S3Credentials, wait_for_port
from callqc.settings import Settings, load_settings
from callqc.stack import LocalSecrets, LocalStack, StackState, ray_temp_dir
from callqc.storage import ObjectStore
from callqc.v1 import callqc_pb2 as pb

from ..conftest import SAMPLES
from .test_end_to_end import NO_JUDGE, _cli_auth, _stack_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BATCH_GUARD_SECONDS = 900  # a batch that never completes fails the test instead of hanging it
START_GUARD_SECONDS = 120
ASR_TITLE = "ServeReplica:callqc:ASR"
S3_OUTAGE_SECONDS = 8.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStack, Settings, StackState]]:
    home = tmp_path_factory.mktemp("faults-home")
    settings = load_settings(home=home, s3={"endpoint": "127.0.0.1:0"}, gateway={"port": 0})
    local = LocalStack(settings, num_cpus=2, env=NO_JUDGE)  # the judge's own faults: test_judge_engines.py
    state = local.up(timeout=300)
    try:
        yield local, settings, state
    finally:
        local.down()


@pytest.fixture(scope="module")
def client(stack: tuple[LocalStack, Settings, StackState]) -> Iterator[CallQCClient]:
    _local, settings, state = stack
    with CallQCClient(f"127.0.0.1:{state.gateway_port}", _cli_auth(settings), timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def uploaded(client: CallQCClient) -> list[CallSpec]:
    """The four sample calls, uploaded once; each case gives them call ids of its own."""
    specs = []
    for call in load_calls(SAMPLES / "batch.yaml"):
        reply = client.upload_file(call.path)
        specs.append(call.spec.model_copy(update={"audio_key": reply.audio_key, "audio_sha256": reply.sha256}))
    return specs


@pytest.fixture(scope="module")
def raw_store(stack: tuple[LocalStack, Settings, StackState]) -> ObjectStore:
    _local, settings, state = stack
    return ObjectStore(_stack_settings(settings, state).s3)


# ---- helpers ---------------------------------------------------------------------------------------------------
def _specs(uploaded: list[CallSpec], suffix: str) -> list[CallSpec]:
    return [s.model_copy(update={"call_id": f"{s.call_id}-{suffix}"}) for s in uploaded]


def _poll(client: CallQCClient, batch_id: str, until: Callable[[pb.GetBatchResponse], bool]) -> pb.GetBatchResponse:
    """GetBatch until ``until`` holds; tolerates a gateway or S3 server that is briefly away."""
    deadline = time.monotonic() + BATCH_GUARD_SECONDS
    last: pb.GetBatchResponse | None = None
    while time.monotonic() < deadline:
        with contextlib.suppress(grpc.RpcError):
            last = client.get_batch(batch_id)
            if until(last):
                return last
        time.sleep(0.5)
    raise AssertionError(f"batch {batch_id} did not get there in {BATCH_GUARD_SECONDS}s; last: {last}")


def _complete(batch: pb.GetBatchResponse) -> bool:
    return all(c.state in (pb.CALL_STATE_DONE, pb.CALL_STATE_FAILED) for c in batch.calls)


def _in_flight(batch: pb.GetBatchResponse) -> bool:
    return batch.counts.running > 0 or _complete(batch)


def _assert_each_call_inspected_once(
    batch: pb.GetBatchResponse, specs: list[CallSpec], raw: ObjectStore, batch_id: str
) -> None:
    states = {c.call_id: c for c in batch.calls}
    assert set(states) == {s.call_id for s in specs}, "calls missing from the batch"
    not_done = {cid: (c.state, c.error, c.error_message) for cid, c in states.items() if c.state != pb.CALL_STATE_DONE}
    assert not not_done, f"calls not inspected: {not_done}"
    print("attempts per call:", {cid: c.attempts for cid, c in states.items()})  # shown with -rA: did it retry?
    prefix = f"reports/{batch_id}/"
    keys = [k for k in raw.list_keys(prefix) if "/" not in k.removeprefix(prefix)]  # not raw/ or review/ objects
    expected = sorted(f"reports/{batch_id}/{s.call_id}.json" for s in specs)
    assert sorted(keys) == expected, f"report objects {keys} != one per call {expected}"


def _stack_processes(settings: Settings) -> list[psutil.Process]:
    """This stack's Ray processes and their workers (never another stack's)."""
    marker = str(ray_temp_dir(settings.home))
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            if any(marker in arg for arg in proc.info["cmdline"] or []):
                found[proc.pid] = proc
                found.update({c.pid: c for c in proc.children(recursive=True)})
    return list(found.values())


def _asr_replica_pids(settings: Settings) -> list[int]:
    pids = []
    for proc in _stack_processes(settings):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            if ASR_TITLE in " ".join(proc.cmdline()) or ASR_TITLE in proc.name():
                pids.append(proc.pid)
    return pids


def _kill_group(pid: int, sig: signal.Signals) -> None:
    """Signal a process the stack started in its own session, and reap it."""
    try:
        os.killpg(pid, sig)
    except OSError:
        with contextlib.suppress(OSError):
            os.kill(pid, sig)
    with contextlib.suppress(psutil.NoSuchProcess, psutil.TimeoutExpired):
        psutil.Process(pid).wait(timeout=30)


def _submit(client: CallQCClient, request_id: str, specs: list[CallSpec]) -> str:
    reply = client.submit(request_id, specs)
    assert reply.created and reply.counts.queued == len(specs)
    return reply.batch_id


# ---- cases -----------------------------------------------------------------------------------------------------
def test_killing_an_asr_replica_mid_batch_loses_and_duplicates_nothing(stack, client, uploaded, raw_store) -> None:
    _local, settings, _state = stack
    specs = _specs(uploaded, "asrkill")
    batch_id = _submit(client, "faults-asr-kill", specs)
    _poll(client, batch_id, _in_flight)
    time.sleep(1.5)  # past AudioPrep: the call is in ASR now
    pids = _asr_replica_pids(settings)
    assert pids, "no ASR replica process found for this stack"
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    batch = _poll(client, batch_id, _complete)
    _assert_each_call_inspected_once(batch, specs, raw_store, batch_id)
    restarted = _asr_replica_pids(settings)
    assert restarted and not set(restarted) & set(pids), "Serve did not start a new ASR replica"


def test_killing_the_gateway_mid_batch_loses_and_duplicates_nothing(stack, client, uploaded, raw_store) -> None:
    local, settings, state = stack
    specs = _specs(uploaded, "gwkill")
    batch_id = _submit(client, "faults-gateway-kill", specs)
    _poll(client, batch_id, _in_flight)
    _kill_group(state.pids["gateway"], signal.SIGKILL)
    with pytest.raises(grpc.RpcError) as err:
        client.get_batch(batch_id)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    state.pids["gateway"] = local._spawn(
        "gateway", [sys.executable, "-m", "callqc.gateway"], local.environment(state, gateway=True)
    )
    local._save_state(state)
    wait_for_port(settings.gateway.host, state.gateway_port, timeout=START_GUARD_SECONDS)
    # the call system never saw an ack (say): it retries the same request id — same batch, no new work
    again = _poll_submit(client, "faults-gateway-kill", specs)
    assert again.batch_id == batch_id and not again.created
    batch = _poll(client, batch_id, _complete)
    _assert_each_call_inspected_once(batch, specs, raw_store, batch_id)


def _poll_submit(client: CallQCClient, request_id: str, specs: list[CallSpec]) -> pb.SubmitBatchResponse:
    deadline = time.monotonic() + START_GUARD_SECONDS
    while True:
        try:
            return client.submit(request_id, specs)
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
        time.sleep(0.5)


def test_restarting_the_s3_server_mid_batch_loses_and_duplicates_nothing(stack, client, uploaded, raw_store) -> None:
    local, settings, state = stack
    specs = _specs(uploaded, "s3restart")
    batch_id = _submit(client, "faults-s3-restart", specs)
    _poll(client, batch_id, _in_flight)
    _kill_group(state.pids["s3"], signal.SIGTERM)
    time.sleep(S3_OUTAGE_SECONDS)  # an outage longer than the S3 client's own retries (~1.5 s)
    secrets = LocalSecrets(settings.home)
    host, _, port = state.s3_endpoint.partition(":")
    server = LocalS3Server(
        settings.home / "s3data",
        S3Credentials(state.access_key, state.secret_key),
        host=host,
        port=int(port),
        log_path=local.logs / "s3.log",
        tls=(secrets.pki / "s3-server.pem", secrets.pki / "server.key"),
    )
    state.pids["s3"] = server.start(detach=True)
    local._save_state(state)
    batch = _poll(client, batch_id, _complete)
    _assert_each_call_inspected_once(batch, specs, raw_store, batch_id)
