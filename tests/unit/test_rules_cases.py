"""Every rule of the default pack: positives and hard negatives (tests/data/rules/cases.yaml), on both matchers."""

from __future__ import annotations

from collections import defaultdict
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from callqc.models import CallMetadata
from callqc.rules import RuleEngine, default_pack_path, load_rule_pack, transcript_from_turns
from tests.unit.rule_backends import BACKENDS

CASES_PATH = Path(__file__).resolve().parents[1] / "data" / "rules" / "cases.yaml"
CASES: list[dict[str, Any]] = yaml.safe_load(CASES_PATH.read_text(encoding="utf-8"))


@cache
def engine(backend: str) -> RuleEngine:
    return RuleEngine(load_rule_pack(default_pack_path()), backend=backend)


def _case_id(case: dict[str, Any]) -> str:
    text = " / ".join(str(t[1]) for t in case["turns"])[:40] or case.get("why", "")
    return f"{case['rule']}-{case['expect']}-{text}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_case(case: dict[str, Any], backend: str) -> None:
    transcript = transcript_from_turns(case["turns"])
    metadata = CallMetadata.model_validate(case["metadata"]) if "metadata" in case else None
    findings = [f for f in engine(backend).evaluate(transcript, metadata) if f.rule_id == case["rule"]]
    why = case.get("why", "")
    if case["expect"] == "none":
        assert not findings, f"{why}: unexpected {[(f.evidence, f.rationale) for f in findings]}"
        return
    assert findings, f"{why}: expected a {case['rule']} finding"
    if "evidence" in case:
        assert any(case["evidence"] in f.evidence for f in findings), [f.evidence for f in findings]
    for f in findings:
        assert f.source == "rule"
        assert 0 < f.confidence <= 1
        assert f.start <= f.end


def test_every_rule_has_a_positive_and_a_hard_negative() -> None:
    seen: dict[str, set[str]] = defaultdict(set)
    for case in CASES:
        seen[case["rule"]].add(case["expect"])
    pack = load_rule_pack(default_pack_path())
    missing = [rule.id for rule in pack.rules if seen[rule.id] != {"hit", "none"}]
    assert not missing, f"rules without both a positive and a negative case: {missing}"
    assert not set(seen) - {rule.id for rule in pack.rules}, "cases for rules the pack does not have"


def test_pack_covers_every_k_and_m_check() -> None:
    ids = {rule.id for rule in load_rule_pack(default_pack_path()).rules}
    k_and_m = {
        "F01",
        "F03",
        "F04",
        "F06",
        "F08",
        "F09",
        "F12",
        "F14",
        "F15",
        "F16",
        "F18",
        "R01",
        "R03",
        "R04",
        "R05",
        "R09",
    }
    signals = {f"C0{i}" for i in range(1, 9)}
    assert k_and_m | signals <= ids
