"""The scorecard: a call's score (0-100) and verdict (pass / fail / needs_review) from its findings.

The numbers live in YAML (the packaged ``callqc/data/scorecard.yaml``, or a file the operator names),
so a QC manager changes weights without a release; the scorecard's ``version`` goes into every report
(``versions.scorecard``).

Rules, in order:

1. Customer signals (category ``customer_signal``, C01-C08) never lower the score or change the verdict.
2. An S0 agent finding with confidence ≥ ``fail_confidence`` (or confirmed by a reviewer) fails the call;
   the score is 0.
3. Otherwise the score is ``start`` minus one deduction per finding — ``weights[rule_id]``, else
   ``severity_weights[severity]`` — each rule counted once by default; findings below
   ``min_confidence`` deduct nothing. The score never goes below 0.
4. A score below ``pass_threshold`` fails the call — when confident findings alone (confidence ≥
   ``fail_confidence`` or confirmed) bring it there; when uncertain ones are needed, the call goes to review.
5. Otherwise the call needs review when a machine finding of a ``review_severities`` severity is not yet
   confirmed by a human, when the judge could not finish (status ``needs_review``), or when roles were
   guessed with low confidence (``roles.needs_review``); else it passes.

Entry points: ``load_scorecard(path=None)`` and ``score_report(findings, scorecard, ...)``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, Field

from callqc.models import Finding, RoleAssignment, Severity

__all__ = ["ScoreResult", "Scorecard", "default_scorecard", "load_scorecard", "score_report"]


class Scorecard(BaseModel):
    """Weights and thresholds (see ``callqc/data/scorecard.yaml`` for what each one means)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str = Field(min_length=1)
    start: float = Field(default=100.0, gt=0, le=100)
    pass_threshold: float = Field(default=80.0, ge=0, le=100)
    fail_confidence: float = Field(default=0.8, ge=0, le=1)
    min_confidence: float = Field(default=0.5, ge=0, le=1)
    count_each_rule_once: bool = True
    severity_weights: dict[Severity, float] = Field(
        default_factory=lambda: {Severity.S0: 40.0, Severity.S1: 15.0, Severity.S2: 5.0}
    )
    weights: dict[str, float] = Field(default_factory=dict)
    review_severities: frozenset[Severity] = frozenset(Severity)
    ignore_categories: frozenset[str] = frozenset({"customer_signal"})
    judge_only_fails: bool = False  # may a finding only the LLM judge raised (no rule evidence) fail a call?

    def weight(self, finding: Finding) -> float:
        if finding.rule_id in self.weights:
            return self.weights[finding.rule_id]
        return self.severity_weights.get(finding.severity, 0.0)


class ScoreResult(NamedTuple):
    """``score`` 0-100 (rounded to 0.1), ``verdict`` pass | fail | needs_review, and why (readable lines)."""

    score: float
    verdict: str
    reasons: list[str]


def load_scorecard(path: Path | str | None = None) -> Scorecard:
    """The scorecard in ``path``, or the packaged one when None."""
    if path is None:
        text = resources.files("callqc").joinpath("data/scorecard.yaml").read_text("utf-8")
    else:
        text = Path(path).read_text("utf-8")
    return Scorecard.model_validate(yaml.safe_load(text))


@lru_cache(maxsize=1)
def default_scorecard() -> Scorecard:
    return load_scorecard()


def score_report(
    findings: Sequence[Finding],
    scorecard: Scorecard | None = None,
    *,
    judge_status: str = "",
    roles: RoleAssignment | None = None,
    confirmed: Collection[int] = (),
) -> ScoreResult:
    """Score ``findings`` (machine ones, or a reviewer's view of them).

    ``confirmed`` holds indexes into ``findings`` that a human confirmed or added: they count with full
    confidence and no longer send the call to review.
    """
    card = scorecard or default_scorecard()
    reasons: list[str] = []
    review: list[str] = []
    fail: list[str] = []
    deducted: dict[str, float] = {}
    sure: dict[str, float] = {}  # deductions of confident (or human-confirmed) findings only
    for index, f in enumerate(findings):
        if f.category in card.ignore_categories:
            continue
        human = index in confirmed
        confidence = 1.0 if human else f.confidence
        if f.source == "judge" and not human and not card.judge_only_fails:
            confidence = min(confidence, card.fail_confidence - 0.01)  # the model alone sends it to review
        label = f"{f.rule_id} {f.name} ({f.severity.value}, {'confirmed' if human else f'confidence {confidence:.2f}'})"
        if f.severity == Severity.S0 and confidence >= card.fail_confidence:
            fail.append(f"{label}: S0 red line — the call fails")
        if not human and f.severity in card.review_severities:
            review.append(f"{label}: not yet confirmed by a reviewer")
        if confidence < card.min_confidence:
            continue
        weight = card.weight(f)
        key = f.rule_id if card.count_each_rule_once else f"{f.rule_id}#{index}"
        deducted[key] = max(deducted.get(key, 0.0), weight)
        if confidence >= card.fail_confidence:
            sure[key] = max(sure.get(key, 0.0), weight)
    fail, review = list(dict.fromkeys(fail)), list(dict.fromkeys(review))  # one line per rule is enough
    if fail:
        return ScoreResult(0.0, "fail", fail)
    score = round(max(0.0, card.start - sum(deducted.values())), 1)
    if score < card.pass_threshold:
        if card.start - sum(sure.values()) < card.pass_threshold:
            reasons.append(f"score {score:g} is below the pass threshold {card.pass_threshold:g}")
            return ScoreResult(score, "fail", reasons)
        review.append(
            f"score {score:g} is below the pass threshold {card.pass_threshold:g} only through "
            f"findings of confidence below {card.fail_confidence:g}"
        )
    if judge_status == "needs_review":
        review.append("the LLM judge could not finish this call (status needs_review)")
    if roles is not None and roles.needs_review:
        review.append(f"speaker roles uncertain ({roles.method}, confidence {roles.confidence:.2f})")
    if review:
        return ScoreResult(score, "needs_review", review)
    return ScoreResult(score, "pass", reasons)
