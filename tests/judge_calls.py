"""Building blocks of the judge tests' calls: timed segments and rule-engine candidates from the default pack."""

from __future__ import annotations

from callqc.models import Finding, Role, Segment
from callqc.rules import load_rule_pack
from callqc.rules.pack import default_pack_path

PACK = load_rule_pack(default_pack_path())


def timed_segments(lines: list[tuple[Role, str]], seconds: float) -> list[Segment]:
    """Segments s0001, s0002, … of ``seconds`` each, laid end to end from 0."""
    return [
        Segment(id=f"s{i:04d}", role=role, start=seconds * (i - 1), end=seconds * i, text=text)
        for i, (role, text) in enumerate(lines, start=1)
    ]


def pack_candidate(
    rule_id: str, segment: Segment, evidence: str = "", confidence: float | None = None, start: float | None = None
) -> Finding:
    """A keyword candidate of the default pack's ``rule_id`` on ``segment`` (as the rule engine reports it)."""
    rule = PACK.rule(rule_id)
    return Finding(
        rule_id=rule_id,
        name=rule.name,
        severity=rule.severity,
        category=rule.category,
        segment_ids=[segment.id],
        start=segment.start if start is None else start,
        end=segment.end,
        evidence=evidence,
        confidence=rule.confidence if confidence is None else confidence,
    )
