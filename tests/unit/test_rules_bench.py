"""The throughput benchmark still runs (a tiny corpus) and says what its figures mean."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "perf" / "bench_rules.py"


def _bench() -> object:
    spec = importlib.util.spec_from_file_location("bench_rules", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_rules"] = module
    spec.loader.exec_module(module)
    return module


def test_bench_smoke(tmp_path: Path) -> None:
    bench = _bench()
    affinity = os.sched_getaffinity(0)
    argv = ["--mb", "0.02", "--seconds", "0.01", "--repeats", "1", "--batch", "8", "--out", str(tmp_path)]
    assert bench.main(argv) == 0  # type: ignore[attr-defined]
    assert os.sched_getaffinity(0) == affinity  # pinning is undone
    result = json.loads((tmp_path / "rules.json").read_text(encoding="utf-8"))
    assert {"recall", "evaluate_many", "evaluate", "naive", "MB"} <= result["definitions"].keys()
    row = result["results"][0]
    assert row["recall_mbps"] > 0 and row["naive_mbps"] > 0 and row["recall_vs_naive"] > 0
    assert {r["pack"] for r in result["results"]} == {"default", "synthetic"}


def test_synthetic_pack_has_over_a_thousand_patterns() -> None:
    from callqc.rules import RuleEngine, load_rule_pack

    bench = _bench()
    engine = RuleEngine(load_rule_pack(bench.synthetic_pack()), backend="aho-corasick")  # type: ignore[attr-defined]
    assert engine.pattern_count >= 1000
