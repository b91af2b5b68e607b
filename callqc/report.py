"""The per-call QC report: transcript by role, findings with audio spans, versions, timings.

Stored in S3 as the JSON mapping of the proto's ``callqc.v1.Report`` (same field names), so the
gateway can hand it out typed without a second schema to keep in step.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from pydantic import BaseModel, Field

from callqc.models import (
    CallSpec,
    ConversationMetrics,
    Finding,
    JudgeSummary,
    RoleAssignment,
    Segment,
    Severity,
)


class Versions(BaseModel):
    pipeline: str
    asr_model: str
    rule_pack: str
    speakers: str
    judge_model: str = ""
    prompt: str = ""
    scorecard: str = ""


class Report(BaseModel):
    call_id: str
    batch_id: str
    language: str
    duration: float
    channel_layout: str
    versions: Versions
    transcript: list[Segment]
    findings: list[Finding]
    stage_seconds: dict[str, float] = Field(default_factory=dict)
    created_at: str
    idempotency_key: str
    audio_key: str
    audio_sha256: str
    verdict: str
    roles: RoleAssignment = Field(default_factory=RoleAssignment)
    conversation: ConversationMetrics = Field(default_factory=ConversationMetrics)
    judge: JudgeSummary = Field(default_factory=JudgeSummary)
    score: float | None = None  # 0-100 from the scorecard; None until scored
    needs_review_reasons: list[str] = Field(default_factory=list)


def report_json(report: Report) -> bytes:
    """The stored form: the proto's JSON mapping (unset optional fields left out, as protobuf does)."""
    return report.model_dump_json(exclude_none=True).encode()


def idempotency_key(call_id: str, audio_sha256: str, versions: Versions) -> str:
    """Same call, same audio, same models and rules → same key → the work is not redone."""
    parts = [call_id, audio_sha256, *versions.model_dump().values()]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


FAIL_CONFIDENCE = 0.8  # S0 findings below this (keyword candidates for judge-only checks) go to review


def verdict(findings: list[Finding], fail_confidence: float = FAIL_CONFIDENCE) -> str:
    """A confident S0 agent finding fails the call; other agent findings need a reviewer; else pass."""
    agent_findings = [f for f in findings if f.category != "customer_signal"]
    if any(f.severity == Severity.S0 and f.confidence >= fail_confidence for f in agent_findings):
        return "fail"
    if agent_findings:
        return "needs_review"
    return "pass"


def build_report(
    spec: CallSpec,
    batch_id: str,
    *,
    audio_sha256: str,
    duration: float,
    transcript: list[Segment],
    findings: list[Finding],
    versions: Versions,
    stage_seconds: dict[str, float],
) -> Report:
    return Report(
        call_id=spec.call_id,
        batch_id=batch_id,
        language=spec.language,
        duration=round(duration, 3),
        channel_layout=spec.channel_layout.value,
        versions=versions,
        transcript=transcript,
        findings=sorted(findings, key=lambda f: (f.start, f.rule_id)),
        stage_seconds={k: round(v, 4) for k, v in stage_seconds.items()},
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        idempotency_key=idempotency_key(spec.call_id, audio_sha256, versions),
        audio_key=spec.audio_key,
        audio_sha256=audio_sha256,
        verdict=verdict(findings),
    )
