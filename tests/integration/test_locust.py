"""The locust load test (perf/locustfile.py) headless against a real local stack, with a tiny profile.

Locust runs as its own process (it monkey-patches the standard library with gevent, which breaks once
urllib3 / minio / ray are imported), exactly as an operator would run it against `callqc up`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from callqc.settings import Settings, load_settings
from callqc.stack import LocalStack, StackState
from callqc.storage import ObjectStore

from ..conftest import REPO_ROOT
from .test_end_to_end import NO_JUDGE, _stack_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LOCUSTFILE = REPO_ROOT / "perf" / "locustfile.py"
PROFILE = REPO_ROOT / "perf" / "profiles" / "local-small.yaml"
GUARD_SECONDS = 600  # kills a hung locust; never asserted on


OVERLOAD_PROFILE = REPO_ROOT / "perf" / "profiles" / "local-overload.yaml"
BACKLOG_CAP = {"CALLQC_GATEWAY__MAX_BACKLOG_CALLS": "2", "CALLQC_GATEWAY__BACKLOG_REFRESH_SECONDS": "1"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, StackState]]:
    """The local stack with a small backlog cap: the gateway refuses batches while 2 calls are unfinished."""
    home = tmp_path_factory.mktemp("locust-home")
    settings = load_settings(home=home, s3={"endpoint": "127.0.0.1:0"}, gateway={"port": 0})
    local = LocalStack(settings, num_cpus=2, env={**BACKLOG_CAP, **NO_JUDGE})
    state = local.up(timeout=300)
    try:
        yield settings, state
    finally:
        local.down()


def _verdict(output: str) -> dict:
    lines = [line for line in output.splitlines() if line.startswith("CALLQC-VERDICT-JSON ")]
    assert lines, f"no verdict printed; output tail:\n{output[-4000:]}"
    return json.loads(lines[-1].split(" ", 1)[1])


def run_locust(stack: tuple[Settings, StackState], profile: Path, users: int, run_time: str) -> tuple[str, dict, int]:
    """Headless locust against the stack's gateway (mTLS); its output, verdict and exit code."""
    settings, state = stack
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CALLQC_", "LOCUST_"))}
    env.update(
        {
            "CALLQC_HOME": str(settings.home),  # CA and client certificate of the stack (mTLS)
            "CALLQC_LOAD_TARGET": f"127.0.0.1:{state.gateway_port}",
            "CALLQC_LOAD_PROFILE": str(profile),
        }
    )
    locust = Path(sys.executable).parent / "locust"
    argv = [
        str(locust),
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "-u",
        str(users),
        "-r",
        str(users),
        "--run-time",
        run_time,
    ]
    result = subprocess.run(
        argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=GUARD_SECONDS, check=False
    )
    output = result.stdout + result.stderr
    return output, _verdict(output), result.returncode


def test_headless_locust_run_inspects_every_submitted_call(stack: tuple[Settings, StackState]) -> None:
    output, verdict, returncode = run_locust(stack, PROFILE, users=1, run_time="60s")
    assert returncode == 0, output[-4000:]
    assert "coverage=100.0%" in output and " PASS" in output
    assert verdict["ok"] and verdict["coverage"] == 1.0
    assert verdict["submitted"] == 4 and verdict["inspected"] == 4  # total_calls of local-small.yaml
    assert verdict["failed"] == 0 and verdict["unfinished"] == 0
    assert verdict["latency_p50_s"] is not None and verdict["latency_p95_s"] >= verdict["latency_p50_s"]
    assert verdict["backlog"], "the backlog was never sampled"


def test_overload_is_refused_with_backoff_and_every_call_is_still_inspected(
    stack: tuple[Settings, StackState],
) -> None:
    """Three users submit 3 batches of 2 at once against a backlog cap of 2: the gateway answers
    RESOURCE_EXHAUSTED, the clients back off and retry the same request ids, nothing fails or is lost,
    the backlog drains, and each call has exactly one report."""
    output, verdict, returncode = run_locust(stack, OVERLOAD_PROFILE, users=3, run_time="30s")
    assert returncode == 0, output[-4000:]
    assert verdict["backoffs"] > 0, "the gateway never refused a batch: the backlog cap did not bite"
    assert verdict["submitted"] == 6 and verdict["inspected"] == 6
    assert verdict["failed"] == 0 and verdict["unfinished"] == 0 and verdict["coverage"] == 1.0
    settings, state = stack
    raw = ObjectStore(_stack_settings(settings, state).s3)
    reports = [
        key
        for key in raw.list_keys(settings.s3.reports_prefix)
        # reports/{batch}/{call}.json — not the latest/ pointers, nor raw/ or review/ objects
        if f"-{verdict['run_id']}-" in key and key.count("/") == 2 and not key.startswith("reports/latest/")
    ]
    assert len(reports) == 6 == len(set(reports)), reports  # one report per call: none lost, none twice
