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

from ..conftest import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LOCUSTFILE = REPO_ROOT / "perf" / "locustfile.py"
PROFILE = REPO_ROOT / "perf" / "profiles" / "local-small.yaml"
GUARD_SECONDS = 600  # kills a hung locust; never asserted on


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, StackState]]:
    home = tmp_path_factory.mktemp("locust-home")
    settings = load_settings(home=home, s3={"endpoint": "127.0.0.1:0"}, gateway={"port": 0})
    local = LocalStack(settings, num_cpus=2)
    state = local.up(timeout=300)
    try:
        yield settings, state
    finally:
        local.down()


def _verdict(output: str) -> dict:
    lines = [line for line in output.splitlines() if line.startswith("CALLQC-VERDICT-JSON ")]
    assert lines, f"no verdict printed; output tail:\n{output[-4000:]}"
    return json.loads(lines[-1].split(" ", 1)[1])


def test_headless_locust_run_inspects_every_submitted_call(stack: tuple[Settings, StackState]) -> None:
    settings, state = stack
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CALLQC_", "LOCUST_"))}
    env.update(
        {
            "CALLQC_HOME": str(settings.home),  # CA and client certificate of the stack (mTLS)
            "CALLQC_LOAD_TARGET": f"127.0.0.1:{state.gateway_port}",
            "CALLQC_LOAD_PROFILE": str(PROFILE),
        }
    )
    locust = Path(sys.executable).parent / "locust"
    argv = [str(locust), "-f", str(LOCUSTFILE), "--headless", "-u", "1", "-r", "1", "--run-time", "60s"]
    result = subprocess.run(
        argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=GUARD_SECONDS, check=False
    )
    output = result.stdout + result.stderr
    verdict = _verdict(output)
    assert result.returncode == 0, output[-4000:]
    assert "coverage=100.0%" in output and " PASS" in output
    assert verdict["ok"] and verdict["coverage"] == 1.0
    assert verdict["submitted"] == 4 and verdict["inspected"] == 4  # total_calls of local-small.yaml
    assert verdict["failed"] == 0 and verdict["unfinished"] == 0
    assert verdict["latency_p50_s"] is not None and verdict["latency_p95_s"] >= verdict["latency_p50_s"]
    assert verdict["backlog"], "the backlog was never sampled"
