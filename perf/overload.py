"""Overload run: minutes of arrivals at a multiple of the sustainable rate against the local stack.

    .venv/bin/python perf/overload.py [--minutes 3] [--factor 2] [--sustainable-cpm N] [--cap N] [--out perf/results]

The sustainable rate defaults to the end-to-end benchmark's measured calls/min (perf/results/e2e.json, same
machine). Brings up a LocalStack whose gateway refuses new batches while more than ``--cap`` accepted calls are
unfinished (``gateway.max_backlog_calls``), then runs the locust load test (perf/locustfile.py, its own process)
with a generated profile: batches of 2 arriving at ``factor`` x the sustainable rate for ``--minutes``, clients
backing off on RESOURCE_EXHAUSTED and retrying the same request id. Passes when every submitted call is
inspected, none failed, the gateway did refuse (backoffs > 0) and the backlog drained. Writes
``overload.json`` and ``overload.png`` (backlog over time against the cap).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callqc.settings import load_settings
from callqc.stack import LocalStack

REPO_ROOT = Path(__file__).resolve().parents[1]
VERDICT_JSON = "CALLQC-VERDICT-JSON "


def sustainable_from_e2e(results: Path, judge: bool) -> float:
    path = results / "e2e.json"
    if not path.exists():
        raise SystemExit(f"no {path}: run perf/bench_e2e.py first or pass --sustainable-cpm")
    e2e = json.loads(path.read_text())
    if e2e.get("judge", False) != judge:
        flag = "" if judge else " --no-judge"
        raise SystemExit(f"{path} was measured with judge={e2e.get('judge', False)}: run perf/bench_e2e.py{flag} first")
    return float(e2e["measured"]["calls_per_minute"])


def overload_profile(calls_per_minute: float, minutes: float, sla_seconds: float) -> dict[str, Any]:
    """A locust profile offering ``calls_per_minute`` for ``minutes`` (then stop, then drain)."""
    return {
        "name": "local-overload-run",
        "calls_per_day": calls_per_minute * 1440,
        "avg_duration_seconds": 20,
        "peak_hour_factor": 1.0,
        "duration_distribution": [{"seconds": 20, "weight": 1.0}],
        "violation_rate": 0.5,
        "batch_size": 2,
        "total_calls": max(2, math.ceil(calls_per_minute * minutes)),
        "stop_when_done": True,
        "sla_seconds": sla_seconds,
        "drain_seconds": sla_seconds,
        "backlog_sample_seconds": 5,
        "max_backoff_seconds": sla_seconds,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    sustainable = args.sustainable_cpm or sustainable_from_e2e(args.out, args.judge)
    offered = sustainable * args.factor
    cap = args.cap or max(2, math.ceil(sustainable))  # about one minute of work may wait
    profile = overload_profile(offered, args.minutes, sla_seconds=args.sla_minutes * 60)
    with tempfile.TemporaryDirectory(prefix="callqc-overload-") as tmp:
        home = Path(tmp) / "home"
        profile_path = Path(tmp) / "profile.yaml"
        profile_path.write_text(yaml.safe_dump(profile))
        settings = load_settings(home=home, s3={"endpoint": "127.0.0.1:0"}, gateway={"port": 0})
        cap_env = {"CALLQC_GATEWAY__MAX_BACKLOG_CALLS": str(cap), "CALLQC_GATEWAY__BACKLOG_REFRESH_SECONDS": "2"}
        if not args.judge:
            cap_env["CALLQC_JUDGE__ENGINE"] = "none"
        stack = LocalStack(settings, num_cpus=os.cpu_count() or 2, env=cap_env)
        state = stack.up(timeout=600)
        try:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("CALLQC_", "LOCUST_"))}
            env.update(
                {
                    "CALLQC_HOME": str(home),
                    "CALLQC_LOAD_TARGET": f"127.0.0.1:{state.gateway_port}",
                    "CALLQC_LOAD_PROFILE": str(profile_path),
                }
            )
            locust = Path(sys.executable).parent / "locust"
            argv = [str(locust), "-f", str(REPO_ROOT / "perf" / "locustfile.py"), "--headless"]
            argv += ["-u", "2", "-r", "2", "--run-time", f"{int(args.minutes * 60)}s"]
            started = time.perf_counter()
            result = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False)
            wall = time.perf_counter() - started
        finally:
            stack.down()
    output = result.stdout + result.stderr
    lines = [line for line in output.splitlines() if line.startswith(VERDICT_JSON)]
    if not lines:
        raise SystemExit(f"locust printed no verdict:\n{output[-4000:]}")
    verdict = json.loads(lines[-1].removeprefix(VERDICT_JSON))
    passed = verdict["ok"] and verdict["failed"] == 0 and verdict["unfinished"] == 0 and verdict["backoffs"] > 0
    return {
        "benchmark": "overload",
        "sustainable_calls_per_minute": round(sustainable, 3),
        "factor": args.factor,
        "offered_calls_per_minute": round(offered, 3),
        "minutes": args.minutes,
        "backlog_cap_calls": cap,
        "judge": args.judge,
        "wall_seconds": round(wall, 1),
        "locust_exit_code": result.returncode,
        "verdict": verdict,
        "passed": passed,
        "definitions": {
            "passed": "every submitted call inspected within the SLA, none failed, none left, and the gateway "
            "answered RESOURCE_EXHAUSTED at least once (backoffs > 0)",
            "backlog": "(seconds since start, calls accepted but unfinished) sampled by the load generator",
        },
    }


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backlog = results["verdict"]["backlog"]
    fig, ax = plt.subplots(figsize=(8, 4))
    if backlog:
        ax.plot([t for t, _n in backlog], [n for _t, n in backlog], label="unfinished calls (backlog)")
    ax.axhline(results["backlog_cap_calls"], color="red", linestyle="--", label="gateway backlog cap")
    ax.axvline(results["minutes"] * 60, color="grey", linestyle=":", label="arrivals stop")
    ax.set_xlabel("seconds")
    ax.set_ylabel("calls")
    v = results["verdict"]
    ax.set_title(
        f"{results['factor']}x sustainable ({results['offered_calls_per_minute']:.1f} calls/min): "
        f"{v['inspected']}/{v['submitted']} inspected, {v['failed']} failed, {v['backoffs']} back-offs"
    )
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="how long arrivals continue")
    parser.add_argument("--factor", type=float, default=2.0, help="arrival rate as a multiple of the sustainable")
    parser.add_argument("--sustainable-cpm", type=float, default=0.0, help="default: perf/results/e2e.json")
    parser.add_argument("--cap", type=int, default=0, help="gateway.max_backlog_calls (default: 1 min of work)")
    parser.add_argument("--sla-minutes", type=float, default=60.0, help="inspected within this after submission")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "perf" / "results")
    parser.add_argument("--no-judge", dest="judge", action="store_false", help="judge.engine=none (rules only)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = run(args)
    (args.out / "overload.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, args.out / "overload.png")
    v = results["verdict"]
    print(
        f"overload {results['factor']}x ({results['offered_calls_per_minute']:.1f} calls/min offered, sustainable "
        f"{results['sustainable_calls_per_minute']:.1f}) for {results['minutes']} min: {v['inspected']}/"
        f"{v['submitted']} inspected, {v['failed']} failed, {v['unfinished']} unfinished, {v['backoffs']} back-offs "
        f"-> {'PASS' if results['passed'] else 'FAIL'}; wrote {args.out / 'overload.json'}"
    )
    return 0 if results["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
