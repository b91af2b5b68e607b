"""Fault injection on the judge: its replica process is killed while it judges; every call is still
inspected exactly once, and by the judge (the call goes back for retry, never through unjudged).

A LocalStack of its own with the judge on (the 0.5B model, so a judged call takes well under a minute on
two cores). Waits are bounded guards, never asserted on.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator

import psutil
import pytest

from callqc.client import CallQCClient, load_calls
from callqc.settings import Settings, load_settings
from callqc.stack import LocalStack, StackState
from callqc.storage import ObjectStore

from ..conftest import SAMPLES
from .test_end_to_end import _cli_auth, _stack_settings
from .test_faults import _assert_each_call_inspected_once, _complete, _in_flight, _poll, _stack_processes

pytestmark = [pytest.mark.integration, pytest.mark.slow]

JUDGE_TITLE = "ServeReplica:callqc:Judge"
BUSY_GUARD_SECONDS = 600
JUDGE_ENV = {"CALLQC_JUDGE__ENGINE": "xllamacpp", "CALLQC_JUDGE__MODEL": "qwen2.5-coder-0.5b"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, StackState]]:
    home = tmp_path_factory.mktemp("judge-faults-home")
    settings = load_settings(home=home, s3={"endpoint": "127.0.0.1:0"}, gateway={"port": 0})
    local = LocalStack(settings, num_cpus=2, env=JUDGE_ENV)
    state = local.up(timeout=600)
    try:
        yield settings, state
    finally:
        local.down()


def _judge_replicas(settings: Settings) -> list[psutil.Process]:
    found = []
    for proc in _stack_processes(settings):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            if JUDGE_TITLE in " ".join(proc.cmdline()) or JUDGE_TITLE in proc.name():
                found.append(proc)
    return found


def _wait_until_judging(settings: Settings) -> list[psutil.Process]:
    """The Judge replica once it is busy (llama.cpp decoding keeps a core busy; idle replicas use none)."""
    deadline = time.monotonic() + BUSY_GUARD_SECONDS
    while time.monotonic() < deadline:
        replicas = _judge_replicas(settings)
        for proc in replicas:
            with contextlib.suppress(psutil.NoSuchProcess):
                if proc.cpu_percent(interval=1.0) > 30:
                    return replicas
        time.sleep(0.5)
    raise AssertionError(f"the Judge replica never got busy within {BUSY_GUARD_SECONDS}s")


def test_killing_the_judge_mid_call_sends_the_call_back_and_it_is_judged_once(
    stack: tuple[Settings, StackState],
) -> None:
    settings, state = stack
    samples = {c.spec.call_id: c for c in load_calls(SAMPLES / "batch.yaml")}
    with CallQCClient(f"127.0.0.1:{state.gateway_port}", _cli_auth(settings), timeout=60) as client:
        specs = []
        for call_id in ("zh_violation", "en_compliant"):
            reply = client.upload_file(samples[call_id].path)
            update = {"audio_key": reply.audio_key, "audio_sha256": reply.sha256, "call_id": f"{call_id}-judgekill"}
            specs.append(samples[call_id].spec.model_copy(update=update))
        reply = client.submit("faults-judge-kill", specs)
        assert reply.created and reply.counts.queued == len(specs)
        batch_id = reply.batch_id
        _poll(client, batch_id, _in_flight)
        killed = _wait_until_judging(settings)
        for proc in killed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
        batch = _poll(client, batch_id, _complete)
        _assert_each_call_inspected_once(batch, specs, ObjectStore(_stack_settings(settings, state).s3), batch_id)
        assert max(c.attempts for c in batch.calls) >= 2, "no call was sent back for another attempt"
        for spec in specs:
            report = json.loads(client.get_report(spec.call_id, batch_id).report_json)
            judge = report.get("judge") or {}
            assert judge.get("engine") == "xllamacpp" and judge.get("status") in ("ok", "needs_review"), judge
        restarted = {p.pid for p in _judge_replicas(settings)}
        assert restarted and not restarted & {p.pid for p in killed}, "Serve did not start a new Judge replica"
