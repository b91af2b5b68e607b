"""The benchmark scripts' pure parts: percentiles, the capacity-model prediction, the summary."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from operators.capacity import load_profiles

from ..conftest import REPO_ROOT


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"perf_{name}", REPO_ROOT / "perf" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ingest() -> ModuleType:
    return _load("bench_ingest")


@pytest.fixture(scope="module")
def e2e() -> ModuleType:
    return _load("bench_e2e")


@pytest.fixture(scope="module")
def runner() -> ModuleType:
    return _load("run_benchmarks")


def test_ingest_scenario_figures(ingest: ModuleType) -> None:
    scenario = ingest.Scenario("gateway", batch_size=100, threads=4, seconds=1.0)
    scenario.latencies_ms = [float(i) for i in range(1, 101)]
    scenario.calls, scenario.batches, scenario.elapsed = 10_000, 100, 2.0
    summary = scenario.summary()
    assert summary["calls_per_second"] == 5000.0 and summary["batches_per_second"] == 50.0
    assert (summary["p50_ms"], summary["p99_ms"]) == (50.0, 99.0)
    assert "latencies_ms" not in summary


def test_the_serve_config_gives_one_replica_per_stage(e2e: ModuleType) -> None:
    replicas = e2e.serve_replicas(REPO_ROOT / "deployments" / "serve_local.yaml")
    assert replicas["ASR"] == 1 and replicas["Dispatcher"] == 1


def test_capacity_prediction_names_the_slowest_stage_on_the_cpu_profile(e2e: ModuleType) -> None:
    figures = load_profiles()["cpu"].stages
    judge, asr = figures["Judge"].per_replica_per_minute, figures["ASR"].per_replica_per_minute
    prediction = e2e.predict(avg_minutes=0.5, channels=2, profile_name="cpu", replicas={"ASR": 1, "Judge": 1})
    assert prediction["bottleneck"] == "Judge"  # the 1.5B judge on 2 CPU threads: under 1 call/min
    assert prediction["calls_per_minute"] == pytest.approx(judge)
    # a call is 0.5 min x 2 channels of ASR work
    assert prediction["stages"]["ASR"]["calls_per_minute"] == pytest.approx(asr / 1.0)
    doubled = e2e.predict(avg_minutes=0.5, channels=2, profile_name="cpu", replicas={"ASR": 2, "Judge": 2})
    assert doubled["stages"]["ASR"]["calls_per_minute"] == pytest.approx(2 * asr)
    assert doubled["calls_per_minute"] == pytest.approx(2 * judge)
    rules_only = e2e.predict(0.5, 2, "cpu", {"ASR": 1, "Judge": 1}, judge=False)  # judge.engine=none
    assert "Judge" not in rules_only["stages"] and rules_only["bottleneck"] == "ASR"
    one_in_flight = e2e.predict(0.5, 2, "cpu", {"ASR": 4}, judge=False, max_in_flight=1)
    assert one_in_flight["bottleneck"] == "in flight"
    assert one_in_flight["calls_per_minute"] == pytest.approx(60 / one_in_flight["call_seconds"], rel=0.01)


def test_the_steady_rate_leaves_out_the_warm_up(e2e: ModuleType) -> None:
    steady = e2e.steady_state([100.0, 100.0, 130.0, 160.0, 160.0])  # the first pair paid the cold start
    assert steady == {"steady_calls": 3, "steady_calls_per_minute": pytest.approx(3.0)}  # 3 calls in 60 s
    assert e2e.steady_state([50.0, 90.0])["steady_calls_per_minute"] is None  # one step is no rate
    assert e2e.steady_state([])["steady_calls"] == 0


def test_missing_stage_benchmarks_are_skipped_with_a_reason(runner: ModuleType, tmp_path: Path) -> None:
    entry = runner.run_bench(runner.Bench("nope", "bench_does_not_exist.py", "nope.json"), tmp_path, quick=True)
    assert entry["status"] == "skipped" and "does not exist" in entry["reason"]
    assert {"rules", "asr", "diarization", "judge", "ingest", "e2e"} == {b.name for b in runner.BENCHES}


def test_headlines_pick_the_figures_of_each_benchmark(runner: ModuleType) -> None:
    ingest = {"batch": 100, "threads": 16, "target_calls_per_second": 2000, "meets_target": False}
    ingest["scenarios"] = [
        {"name": "gateway", "calls_per_second": 590.0, "p99_ms": 3500.0, "ratio_to_baseline_s3": 0.03}
    ]
    assert runner.headline("ingest", ingest)["calls_per_second"] == 590.0
    e2e = {"measured": {"calls_per_minute": 6.0}, "predicted": {"calls_per_minute": 7.0, "bottleneck": "ASR"}}
    assert runner.headline("e2e", e2e)["bottleneck"] == "ASR"
    rules = {"results": [{"pack": "default", "backend": "hyperscan", "recall_mbps": 37.1}]}
    assert runner.headline("rules", rules)["recall_mb_per_s"] == 37.1
    asr = {"callqc": {"rtf_wall": 0.5057, "rtf_cpu": 0.2, "audio_s_per_wall_s": 1.98}, "ratio_cpu": 1.9157}
    assert (
        runner.headline("asr", asr)["rtf_wall"] == 0.506
        and runner.headline("asr", asr)["ratio_cpu_vs_baseline"] == 1.916
    )
    assert runner.headline("other", {"rtf": 0.05, "rows": [1]}) == {"rtf": 0.05}
