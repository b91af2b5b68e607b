"""The judge's answer for one transcript chunk: JSON schema, parsing, citation checks.

The schema is built per chunk: candidate ids, rule ids and segment ids are enums, so an engine with
constrained decoding cannot name anything that is not in the prompt. The parser checks the same
again (a model run without constraints, or a different engine, must not slip a fabricated citation
through): any citation of a segment outside the chunk makes the whole answer invalid.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

Verdict = Literal["violation", "not_violation", "uncertain"]
EmotionState = Literal["calm", "anxious", "angry", "distressed"]
VERDICTS: tuple[str, ...] = ("violation", "not_violation", "uncertain")
STATES: tuple[str, ...] = ("calm", "anxious", "angry", "distressed")
MAX_CITES = 6
RATIONALE_CHARS = 60


class InvalidJudgeOutput(ValueError):
    """The engine's answer is not JSON, does not fit the schema, or cites what is not in the chunk."""


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _clamp(value: float) -> float:
    return min(1.0, max(0.0, float(value)))


class _Scored(_Out):
    confidence: float

    @field_validator("confidence")
    @classmethod
    def _in_unit_range(cls, value: float) -> float:
        return _clamp(value)


class CandidateVerdict(_Scored):
    segment_ids: list[str] = Field(default_factory=list)
    rationale: str = ""
    verdict: Verdict


class NewFinding(_Scored):
    rule_id: str
    segment_ids: list[str]
    rationale: str = ""


class EmotionItem(_Out):
    role: Literal["agent", "customer"]
    segment_ids: list[str]
    state: EmotionState
    hostile: bool = False


class ChunkAnswer(_Out):
    candidates: dict[str, CandidateVerdict] = Field(default_factory=dict)
    findings: list[NewFinding] = Field(default_factory=list)
    emotions: list[EmotionItem] = Field(default_factory=list)


def output_schema(candidate_ids: Sequence[str], segment_ids: Sequence[str], rule_ids: Sequence[str]) -> dict:
    """JSON schema of one chunk's answer (used for constrained decoding)."""
    segment = {"type": "string", "enum": list(segment_ids)} if segment_ids else {"type": "string"}
    cites = {"type": "array", "items": segment, "maxItems": MAX_CITES}
    rationale = {"type": "string", "maxLength": RATIONALE_CHARS}
    confidence = {"type": "number"}
    verdict = {
        "type": "object",
        "properties": {
            "segment_ids": cites,
            "rationale": rationale,
            "verdict": {"type": "string", "enum": list(VERDICTS)},
            "confidence": confidence,
        },
        "required": ["segment_ids", "rationale", "verdict", "confidence"],
        "additionalProperties": False,
    }
    finding = {
        "type": "object",
        "properties": {
            "rule_id": {"type": "string", "enum": list(rule_ids)},
            "segment_ids": {**cites, "minItems": 1},
            "rationale": rationale,
            "confidence": confidence,
        },
        "required": ["rule_id", "segment_ids", "rationale", "confidence"],
        "additionalProperties": False,
    }
    emotion = {
        "type": "object",
        "properties": {
            "role": {"type": "string", "enum": ["agent", "customer"]},
            "segment_ids": {**cites, "minItems": 1},
            "state": {"type": "string", "enum": list(STATES)},
            "hostile": {"type": "boolean"},
        },
        "required": ["role", "segment_ids", "state", "hostile"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {
            "candidates": {
                "type": "object",
                "properties": {cid: verdict for cid in candidate_ids},
                "required": list(candidate_ids),
                "additionalProperties": False,
            },
            "findings": {"type": "array", "items": finding, "maxItems": 8}
            if rule_ids
            else {"type": "array", "maxItems": 0},
            "emotions": {"type": "array", "items": emotion, "maxItems": 4},
        },
        "required": ["candidates", "findings", "emotions"],
        "additionalProperties": False,
    }


def _strip_fences(text: str) -> str:
    text = text.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    return text.strip()


def parse_answer(
    text: str, candidate_ids: Sequence[str], segment_ids: Sequence[str], rule_ids: Sequence[str]
) -> ChunkAnswer:
    """The validated answer, or ``InvalidJudgeOutput`` naming the first problem."""
    try:
        raw = json.loads(_strip_fences(text))
    except (ValueError, TypeError) as err:
        raise InvalidJudgeOutput(f"not JSON: {err}") from err
    try:
        answer = ChunkAnswer.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        raise InvalidJudgeOutput(f"schema: {'.'.join(map(str, first['loc']))}: {first['msg']}") from err
    check_answer(answer, candidate_ids, segment_ids, rule_ids)
    return answer


def check_answer(
    answer: ChunkAnswer, candidate_ids: Sequence[str], segment_ids: Sequence[str], rule_ids: Sequence[str]
) -> None:
    """Every candidate answered, no unknown candidate or rule, every citation a segment of the chunk."""
    known_segments, known_rules = set(segment_ids), set(rule_ids)
    missing = [cid for cid in candidate_ids if cid not in answer.candidates]
    if missing:
        raise InvalidJudgeOutput(f"no verdict for candidate(s) {', '.join(missing)}")
    extra = [cid for cid in answer.candidates if cid not in set(candidate_ids)]
    if extra:
        raise InvalidJudgeOutput(f"verdict for unknown candidate(s) {', '.join(extra)}")

    def cited(where: str, ids: list[str], required: bool) -> None:
        if required and not ids:
            raise InvalidJudgeOutput(f"{where} cites no segment")
        if len(ids) > MAX_CITES:
            raise InvalidJudgeOutput(f"{where} cites {len(ids)} segments (at most {MAX_CITES})")
        fabricated = [sid for sid in ids if sid not in known_segments]
        if fabricated:
            raise InvalidJudgeOutput(f"{where} cites segment(s) not in the transcript: {', '.join(fabricated)}")

    for cid, verdict in answer.candidates.items():
        cited(f"candidate {cid}", verdict.segment_ids, required=False)
    for i, finding in enumerate(answer.findings):
        if finding.rule_id not in known_rules:
            raise InvalidJudgeOutput(f"finding {i} names rule {finding.rule_id!r}, not one the judge may raise")
        cited(f"finding {i} ({finding.rule_id})", finding.segment_ids, required=True)
    for i, emotion in enumerate(answer.emotions):
        cited(f"emotion {i}", emotion.segment_ids, required=True)
