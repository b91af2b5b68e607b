"""callqc.scorecard: weights, thresholds, S0 red lines, customer signals, review triggers, the YAML."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from callqc.models import Finding, RoleAssignment, Severity
from callqc.scorecard import Scorecard, default_scorecard, load_scorecard, score_report

CARD = Scorecard(
    version="test/1",
    pass_threshold=80,
    severity_weights={Severity.S0: 40, Severity.S1: 15, Severity.S2: 5},
    weights={"R09": 2},
    review_severities=frozenset({Severity.S0, Severity.S1}),
)


def f(rule: str, sev: Severity, confidence: float = 1.0, category: str = "") -> Finding:
    return Finding(rule_id=rule, name=rule, severity=sev, confidence=confidence, category=category)


def test_packaged_scorecard_loads_and_is_versioned() -> None:
    card = default_scorecard()
    assert card.version.startswith("scorecard/") and card.pass_threshold == 80
    assert card.weight(f("R09", Severity.S2)) == 2 and card.weight(f("F03", Severity.S0)) == 40
    assert "customer_signal" in card.ignore_categories


def test_no_findings_pass_with_full_marks() -> None:
    assert score_report([], CARD) == (100.0, "pass", [])


def test_customer_signals_never_lower_the_score() -> None:
    signals = [f(f"C0{i}", Severity.S0, category="customer_signal") for i in range(1, 9)]
    assert score_report(signals, CARD) == (100.0, "pass", [])


def test_confident_s0_fails_with_zero() -> None:
    score, verdict, reasons = score_report([f("R09", Severity.S2), f("F01", Severity.S0, 0.95)], CARD)
    assert (score, verdict) == (0.0, "fail") and "F01" in reasons[0]


def test_uncertain_s0_goes_to_review_not_fail() -> None:
    score, verdict, reasons = score_report([f("F05", Severity.S0, 0.6)], CARD)
    assert (score, verdict) == (60.0, "needs_review")
    assert any("confidence" in r for r in reasons)


def test_weights_per_rule_and_severity_default_each_rule_once() -> None:
    findings = [f("R09", Severity.S2), f("R09", Severity.S2), f("R05", Severity.S2)]
    assert score_report(findings, CARD) == (93.0, "pass", [])  # 100 - 2 - 5; S2 not in review_severities here
    per_hit = CARD.model_copy(update={"count_each_rule_once": False})
    assert score_report(findings, per_hit).score == 91.0


def test_low_confidence_findings_do_not_deduct() -> None:
    assert score_report([f("R05", Severity.S2, 0.3)], CARD).score == 100.0


def test_below_threshold_fails() -> None:
    findings = [f("F13", Severity.S1), f("F16", Severity.S1)]
    score, verdict, reasons = score_report(findings, CARD)
    assert (score, verdict) == (70.0, "fail") and "threshold" in reasons[0]


def test_unconfirmed_s1_needs_review_until_confirmed() -> None:
    findings = [f("F13", Severity.S1)]
    assert score_report(findings, CARD).verdict == "needs_review"
    assert score_report(findings, CARD, confirmed={0}) == (85.0, "pass", [])


def test_judge_and_roles_send_to_review() -> None:
    assert score_report([], CARD, judge_status="needs_review").verdict == "needs_review"
    roles = RoleAssignment(method="cues", confidence=0.55, needs_review=True)
    score, verdict, reasons = score_report([], CARD, roles=roles)
    assert (score, verdict) == (100.0, "needs_review") and "roles" in reasons[0]
    # a failing call stays failed
    assert score_report([f("F01", Severity.S0)], CARD, judge_status="needs_review").verdict == "fail"


def test_load_from_file_is_strict(tmp_path: Path) -> None:
    path = tmp_path / "card.yaml"
    path.write_text("version: bank/7\npass_threshold: 60\nweights: {F13: 50}\n")
    card = load_scorecard(path)
    assert card.version == "bank/7" and score_report([f("F13", Severity.S1)], card, confirmed={0}).verdict == "fail"
    path.write_text("version: bank/7\npass_treshold: 60\n")
    with pytest.raises(ValidationError):
        load_scorecard(path)


def test_a_judge_only_s0_finding_sends_the_call_to_review_but_never_fails_it() -> None:
    from callqc.models import Finding, Severity
    from callqc.scorecard import default_scorecard, score_report

    judge_only = Finding(rule_id="F07", name="向无关第三人披露", severity=Severity.S0, source="judge", confidence=0.95)
    result = score_report([judge_only], default_scorecard())
    assert result.verdict == "needs_review" and result.score is not None and result.score < 100
    confirmed_candidate = judge_only.model_copy(update={"source": "both"})
    assert score_report([confirmed_candidate], default_scorecard()).verdict == "fail"
    assert score_report([judge_only], default_scorecard(), confirmed=[0]).verdict == "fail"  # a reviewer agreed
    strict = default_scorecard().model_copy(update={"judge_only_fails": True})
    assert score_report([judge_only], strict).verdict == "fail"
