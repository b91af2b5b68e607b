"""Run every benchmark that exists and write one summary: perf/results/summary.json + summary.png.

    .venv/bin/python perf/run_benchmarks.py [--only rules,asr,ingest,e2e] [--quick] [--out perf/results]

Each benchmark runs as its own process (a crash or a missing dependency in one does not stop the others) and
writes its JSON into ``--out``; this script collects the headline figures. Stage benchmarks are optional
(``perf/bench_rules.py``, ``perf/bench_asr.py``: run when the file exists, skipped with a reason when not);
diarization (DER, RTF) and the judge (calls/min and tokens/s one call at a time, per model) run like the others.
``--quick`` shortens every run (smaller corpora, fewer seconds, fewer calls) for a smoke check;
``--collect-only`` runs nothing and summarises the JSON already in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PERF = Path(__file__).resolve().parent
REPO_ROOT = PERF.parent


@dataclass(frozen=True)
class Bench:
    """One benchmark script and what it writes."""

    name: str
    script: str
    result: str  # JSON file name in the results folder
    quick_args: tuple[str, ...] = ()
    timeout: float = 1800.0


BENCHES = (
    Bench("rules", "bench_rules.py", "rules.json", ("--mb", "0.5", "--repeats", "1", "--seconds", "0.3")),
    Bench("asr", "bench_asr.py", "asr.json", ("--skip-baseline",)),
    Bench("ingest", "bench_ingest.py", "ingest.json", ("--seconds", "2", "--scenarios", "gateway,baseline_s3")),
    Bench("diarization", "bench_diarization.py", "diarization.json", ("--no-asr",)),
    Bench("judge", "bench_judge.py", "judge.json", ("--models", "qwen2.5-coder-0.5b", "--calls", "2")),
    Bench("e2e", "bench_e2e.py", "e2e.json", ("--calls", "4")),
)


def _accepts_out(script: Path) -> bool:
    """Whether the script takes --out (then its results go where this run says)."""
    try:
        text = script.read_text()
    except OSError:
        return False
    return '"--out"' in text


def collect(bench: Bench, out: Path) -> dict[str, Any]:
    """The benchmark's last JSON in ``out``, without running it."""
    path = out / bench.result
    if not path.exists():
        reason = "no earlier result" if (PERF / bench.script).exists() else f"perf/{bench.script} does not exist yet"
        return {"status": "skipped", "reason": reason}
    return {"status": "ok", "collected": True, "result": bench.result, "data": json.loads(path.read_text())}


def run_bench(bench: Bench, out: Path, quick: bool) -> dict[str, Any]:
    """Run one benchmark; returns its status, seconds and (when it wrote one) its JSON."""
    script = PERF / bench.script
    if not script.exists():
        return {"status": "skipped", "reason": f"perf/{bench.script} does not exist yet"}
    argv = [sys.executable, str(script)]
    if _accepts_out(script):
        argv += ["--out", str(out)]
    if quick:
        argv += list(bench.quick_args)
    result_path = out / bench.result
    before = result_path.stat().st_mtime if result_path.exists() else None
    started = time.perf_counter()
    print(f"== {bench.name}: {' '.join(argv[1:])}", flush=True)
    try:
        proc = subprocess.run(argv, cwd=REPO_ROOT, timeout=bench.timeout, capture_output=True, text=True, check=False)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "reason": f"timed out after {bench.timeout:.0f}s"}
    seconds = round(time.perf_counter() - started, 1)
    tail = (proc.stdout + proc.stderr)[-2000:]
    print(tail.rstrip()[-600:], flush=True)
    fresh = result_path.exists() and result_path.stat().st_mtime != before
    if not fresh:
        return {"status": "failed", "reason": f"exit {proc.returncode}, no {bench.result} written", "log_tail": tail}
    data = json.loads(result_path.read_text())
    status = "ok" if proc.returncode == 0 else "failed"
    return {"status": status, "exit_code": proc.returncode, "seconds": seconds, "result": bench.result, "data": data}


def headline(name: str, data: dict[str, Any]) -> dict[str, Any]:
    """The few figures of a benchmark's JSON that go into the summary."""
    if name == "rules":
        rows = [r for r in data.get("results", []) if r.get("pack") == "default"]
        best = max(rows, key=lambda r: r.get("recall_mbps", 0), default={})
        return {
            "backend": best.get("backend"),
            "recall_mb_per_s": best.get("recall_mbps"),
            "evaluate_many_mb_per_s": best.get("evaluate_many_mbps"),
            "recall_vs_naive": best.get("recall_vs_naive"),
        }
    if name == "ingest":
        rows = {r["name"]: r for r in data.get("scenarios", [])}
        gateway = rows.get("gateway", {})
        return {
            "calls_per_second": gateway.get("calls_per_second"),
            "p99_ms": gateway.get("p99_ms"),
            "batch": data.get("batch"),
            "threads": data.get("threads"),
            "ratio_to_baseline_s3": gateway.get("ratio_to_baseline_s3"),
            "target_calls_per_second": data.get("target_calls_per_second"),
            "meets_target": data.get("meets_target"),
        }
    if name == "e2e":
        measured, predicted = data.get("measured", {}), data.get("predicted", {})
        return {
            "calls_per_minute": measured.get("calls_per_minute"),
            "steady_calls_per_minute": measured.get("steady_calls_per_minute"),
            "audio_minutes_per_minute": measured.get("audio_minutes_per_minute"),
            "predicted_calls_per_minute": round(predicted.get("calls_per_minute", 0.0), 3),
            "bottleneck": predicted.get("bottleneck"),
            "prediction_error": data.get("prediction_error"),
            "within_tolerance": data.get("within_tolerance"),
        }
    if name == "judge" and isinstance(data.get("models"), dict):
        out: dict[str, Any] = {}
        for model, figures in data["models"].items():
            one = figures.get("one_at_a_time", {})
            out[f"{model}_calls_per_min"] = _round((one.get("calls_per_s") or 0.0) * 60)
            out[f"{model}_completion_tokens_per_s"] = _round(one.get("completion_tokens_per_s"))
        return out
    if name == "asr" and isinstance(data.get("callqc"), dict):
        callqc = data["callqc"]
        return {
            "rtf_wall": _round(callqc.get("rtf_wall")),
            "rtf_cpu": _round(callqc.get("rtf_cpu")),
            "audio_s_per_wall_s": _round(callqc.get("audio_s_per_wall_s")),
            "ratio_cpu_vs_baseline": _round(data.get("ratio_cpu")),
            "meets_target": data.get("meets_target"),
        }
    return {k: v for k, v in data.items() if isinstance(v, int | float | str | bool)}  # unknown shape


def _round(value: Any, digits: int = 3) -> Any:
    return round(value, digits) if isinstance(value, float) else value


def plot(summary: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    entries = summary["benchmarks"]
    fig, ax = plt.subplots(figsize=(10, 0.6 * len(entries) + 1.5))
    ax.axis("off")
    lines = []
    for name, entry in entries.items():
        if entry["status"] == "ok":
            figures = ", ".join(f"{k}={v}" for k, v in entry.get("headline", {}).items() if v is not None)
            lines.append((f"{name}: {figures}", "black"))
        else:
            lines.append((f"{name}: {entry['status']} — {entry.get('reason', '')}", "grey"))
    for i, (text, color) in enumerate(lines):
        ax.text(0.0, 1 - (i + 0.5) / len(lines), text, fontsize=9, color=color, va="center", wrap=True)
    ax.set_title(f"callqc benchmarks — {summary['machine']['cpus']} CPUs, {summary['finished_at']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="comma-separated benchmarks: rules,asr,ingest,e2e")
    parser.add_argument("--quick", action="store_true", help="short runs (smoke check)")
    parser.add_argument("--collect-only", action="store_true", help="summarise the results already in --out")
    parser.add_argument("--out", type=Path, default=PERF / "results")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    wanted = {n for n in args.only.split(",") if n}
    unknown = wanted - {b.name for b in BENCHES}
    if unknown:
        parser.error(f"unknown benchmarks: {', '.join(sorted(unknown))}")
    benchmarks: dict[str, Any] = {}
    for bench in BENCHES:
        if wanted and bench.name not in wanted:
            continue
        entry = collect(bench, args.out) if args.collect_only else run_bench(bench, args.out, args.quick)
        if entry.get("data") is not None:
            entry["headline"] = headline(bench.name, entry.pop("data"))
        benchmarks[bench.name] = entry
    summary = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "finished_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "quick": args.quick,
        "benchmarks": benchmarks,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(summary, args.out / "summary.png")
    for name, entry in benchmarks.items():
        print(f"{name:24s} {entry['status']:8s} {entry.get('headline') or entry.get('reason', '')}")
    return 0 if all(e["status"] != "failed" for e in benchmarks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
