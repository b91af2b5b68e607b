"""The per-call QC report: transcript by role, findings with audio spans, versions, timings.

Stored in S3 as the JSON mapping of the proto's ``callqc.v1.Report`` (same field names), so the
gateway can hand it out typed without a second schema to keep in step.

The stored report is the *redacted* one (``callqc.redaction``: ID / mobile / card numbers and
e-mail addresses masked in transcript, words, evidence and rationale). The unredacted transcript and
findings are kept only as a separate object, ``reports/{batch}/raw/{call}.json``, written only through
the client-side encrypted store (never in plaintext) and handed out only by the gateway's
``Review/GetRawTranscript`` (QC managers, audited). ``save_report`` writes both.
Score and verdict come from the scorecard (``callqc.scorecard``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from callqc.models import (
    CallSpec,
    ConversationMetrics,
    Finding,
    JudgeSummary,
    RoleAssignment,
    Segment,
)
from callqc.scorecard import Scorecard, default_scorecard, score_report

if TYPE_CHECKING:
    from callqc.jobs import JobStore

log = logging.getLogger(__name__)


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
    """Same call, same audio, same models and rules → same key → the work is not redone.

    The scorecard version is left out: a new scorecard re-scores stored findings, it does not redo the work.
    """
    parts = [call_id, audio_sha256, *versions.model_dump(exclude={"scorecard"}).values()]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


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
    roles: RoleAssignment | None = None,
    conversation: ConversationMetrics | None = None,
    judge: JudgeSummary | None = None,
    scorecard: Scorecard | None = None,
) -> Report:
    """The machine report (unredacted: redaction happens when it is stored, see ``save_report``).

    Score and verdict come from ``scorecard`` (default: the packaged one), whose version is recorded
    in ``versions.scorecard``.
    """
    card = scorecard or default_scorecard()
    if not versions.scorecard:
        versions = versions.model_copy(update={"scorecard": card.version})
    roles = roles or RoleAssignment()
    judge = judge or JudgeSummary()
    ordered = sorted(findings, key=lambda f: (f.start, f.rule_id))
    scored = score_report(ordered, card, judge_status=judge.status, roles=roles)
    return Report(
        call_id=spec.call_id,
        batch_id=batch_id,
        language=spec.language,
        duration=round(duration, 3),
        channel_layout=spec.channel_layout.value,
        versions=versions,
        transcript=transcript,
        findings=ordered,
        stage_seconds={k: round(v, 4) for k, v in stage_seconds.items()},
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        idempotency_key=idempotency_key(spec.call_id, audio_sha256, versions),
        audio_key=spec.audio_key,
        audio_sha256=audio_sha256,
        verdict=scored.verdict,
        roles=roles,
        conversation=conversation or ConversationMetrics(),
        judge=judge,
        score=scored.score,
        needs_review_reasons=scored.reasons if scored.verdict != "pass" else [],
    )


# ---- storage: the redacted report, and the raw transcript kept only encrypted ------------------


class RawTranscript(BaseModel):
    """What redaction hid: the call's transcript and findings as the machine produced them."""

    call_id: str
    batch_id: str
    transcript: list[Segment]
    findings: list[Finding]
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))


def raw_transcript_key(jobs: JobStore, batch_id: str, call_id: str) -> str:
    return f"{jobs.reports}{batch_id}/raw/{call_id}.json"


def store_is_encrypted(store: object) -> bool:
    from callqc.security.envelope import EncryptedObjectStore

    return isinstance(store, EncryptedObjectStore)


def save_report(jobs: JobStore, report: Report, names: Iterable[str] = ()) -> str:
    """Store the raw transcript (encrypted store only) and then the redacted report; returns the report key.

    On a store without client-side encryption the raw transcript is not kept at all.
    """
    from callqc.redaction import redact_report

    if store_is_encrypted(jobs.store):
        raw = RawTranscript(
            call_id=report.call_id, batch_id=report.batch_id, transcript=report.transcript, findings=report.findings
        )
        jobs.store.put_bytes(
            raw_transcript_key(jobs, report.batch_id, report.call_id),
            raw.model_dump_json().encode(),
            content_type="application/json",
        )
    else:
        log.warning("object store is not encrypted: the raw transcript of %s is not kept", report.call_id)
    return jobs.put_report(report.batch_id, report.call_id, report_json(redact_report(report, names)))


def load_raw_transcript(jobs: JobStore, batch_id: str, call_id: str) -> RawTranscript:
    """The unredacted transcript; raises ``ObjectNotFound`` (also when the store is not encrypted)."""
    from callqc.storage import ObjectNotFound

    key = raw_transcript_key(jobs, batch_id, call_id)
    if not store_is_encrypted(jobs.store):
        raise ObjectNotFound(key)
    return RawTranscript.model_validate_json(jobs.store.get_bytes(key))
