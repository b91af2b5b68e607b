"""End-to-end benchmark: calls/min and audio-minutes/min through the whole local stack, vs the capacity model.

    .venv/bin/python perf/bench_e2e.py [--calls 8] [--out perf/results] [--profile cpu]

Brings up a LocalStack (rclone S3, Ray head, the Serve app of deployments/serve_local.yaml, the gateway) in a
temporary home, uploads the sample calls, submits ``--calls`` of them (the samples repeated under new call ids),
and times from the SubmitBatch acknowledgement to the last report. Then predicts the same figure from the
capacity model (operators/capacity.py, figures of ``--profile`` in operators/capacity.yaml, replicas per stage
from the Serve config, calls in flight from dispatcher.max_in_flight): the pipeline clears the least of each
stage's replicas x per-replica throughput / per-call demand and of max_in_flight / seconds per call (Little's
law). The model predicts a warm pipeline, so it is compared with the rate after the first completion (the
warm-up: model loads, the judge's first, uncached prompt). Prints whether the prediction is within 20% of
the measurement; writes ``e2e.json`` and ``e2e.png``.

Note: repeated samples share their audio, so AudioPrep decodes each recording once and reuses it (as the
product does for a retried or resubmitted call); ASR, speakers, rules and reports run for every call.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import wave
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callqc.client import CallQCClient, ClientAuth, load_calls
from callqc.settings import load_settings
from callqc.stack import DEFAULT_SERVE_CONFIG, LocalSecrets, LocalStack
from callqc.v1 import callqc_pb2 as pb
from operators.capacity import load_profiles, pipeline_throughput

REPO_ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 0.20


def audio_seconds(path: Path) -> float:
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


def serve_replicas(config: Path) -> dict[str, int]:
    """num_replicas per deployment of the Serve config (autoscaling: its min_replicas)."""
    doc = yaml.safe_load(config.read_text())
    out: dict[str, int] = {}
    for app in doc.get("applications", []):
        for dep in app.get("deployments", []):
            auto = dep.get("autoscaling_config") or {}
            out[dep["name"]] = int(dep.get("num_replicas") or auto.get("min_replicas") or 1)
    return out


def predict(
    avg_minutes: float,
    channels: int,
    profile_name: str,
    replicas: dict[str, int],
    judge: bool = True,
    max_in_flight: int | None = None,
) -> dict[str, Any]:
    """Calls/min the capacity model says this stack clears, and what limits it (a stage or the calls in flight)."""
    profile = load_profiles()[profile_name]
    # judge.engine=none: the Judge stage passes calls straight through
    model = pipeline_throughput(
        profile, replicas, avg_minutes, channels, max_in_flight, skip=() if judge else ("Judge",)
    )
    return {
        "profile": profile_name,
        "hardware": profile.hardware,
        "bottleneck": model.bottleneck,
        "calls_per_minute": model.calls_per_minute,
        "call_seconds": round(model.call_seconds, 2),
        "max_in_flight": model.max_in_flight,
        "in_flight_calls_per_minute": model.in_flight_calls_per_minute,
        "stages": {name: asdict(bound) for name, bound in model.stages.items()},
    }


def measure(calls: int, home: Path, num_cpus: int, judge: bool) -> dict[str, Any]:
    settings = load_settings(home=home, s3={"endpoint": "127.0.0.1:0"}, gateway={"port": 0})
    env = {} if judge else {"CALLQC_JUDGE__ENGINE": "none"}
    stack = LocalStack(settings, num_cpus=num_cpus, env=env, log=lambda m: print(f"  stack: {m}", flush=True))
    started = time.perf_counter()
    state = stack.up(timeout=300)
    up_seconds = time.perf_counter() - started
    try:
        secrets = LocalSecrets(home)
        cert, key = secrets.client_pair()
        auth = ClientAuth(ca_file=secrets.ca, cert_file=cert, key_file=key)
        samples = load_calls(REPO_ROOT / "samples" / "batch.yaml")
        with CallQCClient(f"127.0.0.1:{state.gateway_port}", auth, timeout=120) as client:
            uploaded = []
            for sample in samples:
                reply = client.upload_file(sample.path)
                spec = sample.spec.model_copy(update={"audio_key": reply.audio_key, "audio_sha256": reply.sha256})
                uploaded.append((spec, audio_seconds(sample.path)))
            chosen = [uploaded[i % len(uploaded)] for i in range(calls)]
            specs = [s.model_copy(update={"call_id": f"{s.call_id}-e2e{i}"}) for i, (s, _d) in enumerate(chosen)]
            seconds_of = {s.call_id: d for s, (_x, d) in zip(specs, chosen, strict=True)}
            t0 = time.perf_counter()
            reply = client.submit(f"bench-e2e-{time.time_ns()}", specs)
            done_at: dict[str, float] = {}
            states: dict[str, int] = {}
            deadline = time.monotonic() + 3600
            while time.monotonic() < deadline:
                batch = client.get_batch(reply.batch_id)
                now = time.perf_counter() - t0
                for c in batch.calls:
                    states[c.call_id] = c.state
                    if c.state in (pb.CALL_STATE_DONE, pb.CALL_STATE_FAILED):
                        done_at.setdefault(c.call_id, now)
                if len(done_at) == len(specs):
                    break
                time.sleep(0.5)
            stage_seconds: dict[str, list[float]] = {}
            for call_id, call_state in states.items():
                if call_state == pb.CALL_STATE_DONE:
                    for stage, seconds in client.get_report(call_id, reply.batch_id).report.stage_seconds.items():
                        stage_seconds.setdefault(stage, []).append(seconds)
    finally:
        stack.down()
    completions = sorted(done_at.values())
    wall = completions[-1] if completions else float("nan")
    done = [cid for cid, s in states.items() if s == pb.CALL_STATE_DONE]
    audio_min = sum(seconds_of[c] for c in done) / 60
    return {
        "calls": calls,
        "done": len(done),
        "failed": sum(1 for s in states.values() if s == pb.CALL_STATE_FAILED),
        "stack_up_seconds": round(up_seconds, 1),
        "wall_seconds": round(wall, 2),
        "calls_per_minute": round(len(done) / wall * 60, 3) if wall else 0.0,
        "audio_minutes": round(audio_min, 3),
        "audio_minutes_per_minute": round(audio_min / wall * 60, 3) if wall else 0.0,
        "avg_call_minutes": round(audio_min / len(done), 4) if done else 0.0,
        "completion_seconds": [round(t, 2) for t in completions],
        **steady_state(completions),
        # mean seconds one call spent in each stage (from the reports): what a replica's throughput is made of
        "stage_seconds_mean": {k: round(sum(v) / len(v), 3) for k, v in sorted(stage_seconds.items())},
    }


def steady_state(completions: list[float]) -> dict[str, Any]:
    """Calls/min after the warm-up: from the first completion (the cold start: model loads, the judge's first
    prompt) to the last, over the calls finished in between. The capacity model predicts this rate."""
    if not completions:
        return {"steady_calls": 0, "steady_calls_per_minute": None}
    first = completions[0]
    later = [t for t in completions if t > first + 1e-6]
    if len(later) < 2:  # one step after the warm-up is no rate
        return {"steady_calls": len(later), "steady_calls_per_minute": None}
    return {"steady_calls": len(later), "steady_calls_per_minute": round(len(later) / (later[-1] - first) * 60, 3)}


def plot(result: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    m, p = result["measured"], result["predicted"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    bars = {"measured\n(whole run)": m["calls_per_minute"]}
    if m.get("steady_calls_per_minute"):
        bars["measured\n(after warm-up)"] = m["steady_calls_per_minute"]
    bars[f"capacity model\n({p['bottleneck']}-bound)"] = p["calls_per_minute"]
    ax1.bar(list(bars), list(bars.values()))
    ax1.set_ylabel("calls / min")
    ax1.set_title(f"within 20%: {result['within_tolerance']}")
    times = m["completion_seconds"]
    ax2.step(times, range(1, len(times) + 1), where="post")
    ax2.set_xlabel("seconds after SubmitBatch ack")
    ax2.set_ylabel("calls finished")
    ax2.set_title(f"{m['calls']} calls, {m['audio_minutes']:.1f} audio-min")
    fig.suptitle("callqc end to end on the local stack")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=8)
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs given to Ray (the stack's default: 2)")
    parser.add_argument("--profile", default="cpu", help="profile of operators/capacity.yaml to compare with")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument(
        "--no-judge", dest="judge", action="store_false", help="run the stack with judge.engine=none (rules only)"
    )
    parser.add_argument(
        "--repredict",
        action="store_true",
        help="measure nothing: compare the measurement in --out/e2e.json with the capacity model as it is now",
    )
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.repredict:
        previous = json.loads((args.out / "e2e.json").read_text())
        measured, args.judge = previous["measured"], previous.get("judge", False)
        measured.update(steady_state(measured["completion_seconds"]))  # a run stored before the steady rate
    else:
        with tempfile.TemporaryDirectory(prefix="cq-e2e-") as tmp:
            measured = measure(args.calls, Path(tmp) / "home", args.num_cpus, args.judge)
    replicas = serve_replicas(DEFAULT_SERVE_CONFIG)
    in_flight = load_settings().dispatcher.max_in_flight
    predicted = predict(measured["avg_call_minutes"] or 1.0, 2, args.profile, replicas, args.judge, in_flight)
    # the model predicts the rate once warm; a run too short for a steady rate is compared as a whole
    observed = measured.get("steady_calls_per_minute") or measured["calls_per_minute"]
    error = (predicted["calls_per_minute"] - observed) / observed
    result = {
        "benchmark": "e2e",
        "machine": previous["machine"]
        if args.repredict
        else {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],  # > cpus: other work skewed the run
        },
        "serve_config": str(DEFAULT_SERVE_CONFIG.relative_to(REPO_ROOT)),
        "judge": args.judge,  # False: judge.engine=none (rules only)
        "measured": measured,
        "predicted": predicted,
        "prediction_error": round(error, 3),
        "tolerance": TOLERANCE,
        "within_tolerance": abs(error) <= TOLERANCE,
        "definitions": {
            "calls_per_minute": "calls DONE / seconds from the SubmitBatch ack to the last report x 60",
            "audio_minutes_per_minute": "minutes of call audio inspected per wall-clock minute (same window)",
            "steady_calls_per_minute": "calls finished after the first completion / seconds from the first "
            "completion to the last x 60 (the warm-up - model loads, the judge's first prompt - left out)",
            "prediction_error": "(predicted - measured) / measured, measured = the steady rate when the run has "
            "one (>= 2 completions after the first), else the whole-window rate",
        },
    }
    (args.out / "e2e.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out / "e2e.png")
    print(
        f"measured {measured['calls_per_minute']:.2f} calls/min (after warm-up: "
        f"{measured.get('steady_calls_per_minute') or '-'}), {measured['audio_minutes_per_minute']:.2f} "
        f"audio-min/min ({measured['done']}/{measured['calls']} done); capacity model ({args.profile}, "
        f"{predicted['bottleneck']}-bound) {predicted['calls_per_minute']:.2f} calls/min: "
        f"{'within' if result['within_tolerance'] else 'NOT within'} 20% (error {error:+.0%})"
    )
    return 0 if measured["done"] == measured["calls"] else 1


if __name__ == "__main__":
    sys.exit(main())
