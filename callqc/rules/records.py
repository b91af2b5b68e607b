"""Transcript records as plain JSON (one call per JSONL line) → ``Transcript`` + ``CallMetadata``.

Line format::

    {"call_id": "c1", "language": "zh",
     "turns": [{"speaker": "agent", "text": "您好…", "start": 0.0, "end": 2.1,
                "words": [{"text": "您好", "start": 0.0, "end": 0.6}]}],
     "metadata": {"call_started_at": "2026-11-02T21:59:00+08:00", "attempts_today": 2,
                  "ledger": {"amount_due": 35000, "overdue_days": 30}}}

``start``/``end``/``words`` are optional; missing times are laid end to end (for hand-written cases).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from callqc.models import CallMetadata, Role, Segment, Transcript, Word

_ROLE_ALIASES = {
    "agent": Role.AGENT,
    "collector": Role.AGENT,
    "坐席": Role.AGENT,
    "客服": Role.AGENT,
    "催收员": Role.AGENT,
    "customer": Role.CUSTOMER,
    "debtor": Role.CUSTOMER,
    "客户": Role.CUSTOMER,
    "third_party": Role.THIRD_PARTY,
    "third-party": Role.THIRD_PARTY,
    "第三方": Role.THIRD_PARTY,
}


@dataclass(frozen=True)
class CallRecord:
    call_id: str
    transcript: Transcript
    metadata: CallMetadata | None


def role_of(speaker: str) -> Role:
    return _ROLE_ALIASES.get(speaker.strip().lower(), Role.UNKNOWN)


def _turn_dict(turn: Mapping[str, Any] | Sequence[Any]) -> Mapping[str, Any]:
    if isinstance(turn, Mapping):
        return turn
    speaker, text, *times = turn
    out: dict[str, Any] = {"speaker": speaker, "text": text}
    if len(times) == 2:
        out["start"], out["end"] = times
    return out


def transcript_from_turns(
    turns: Iterable[Mapping[str, Any] | Sequence[Any]], language: str = "zh", call_id: str = "call"
) -> Transcript:
    """Build a ``Transcript`` from turn dicts or ``(speaker, text[, start, end])`` tuples."""
    segments = []
    clock = 0.0
    for i, raw in enumerate(turns):
        turn = _turn_dict(raw)
        text = str(turn.get("text", ""))
        start = float(turn["start"]) if turn.get("start") is not None else clock
        end = float(turn["end"]) if turn.get("end") is not None else start + max(1.0, 0.25 * len(text))
        words = [Word.model_validate(w) for w in turn.get("words", [])]
        segments.append(
            Segment(
                id=str(turn.get("id") or f"{call_id}-{i}"),
                role=role_of(str(turn.get("speaker", ""))),
                channel=int(turn.get("channel", 0)),
                start=start,
                end=end,
                text=text,
                words=words,
            )
        )
        clock = max(clock, end)
    duration = max((s.end for s in segments), default=0.0)
    return Transcript(language=language, duration=duration, segments=segments)


def record_to_call(record: Mapping[str, Any] | str | bytes) -> CallRecord:
    """One JSONL record (parsed or not) → ``CallRecord``; raises ``ValueError`` on a bad record."""
    data = json.loads(record) if isinstance(record, str | bytes) else record
    if not isinstance(data, Mapping) or not isinstance(data.get("turns"), list):
        raise ValueError("a record needs a 'turns' list")
    call_id = str(data.get("call_id", "call"))
    transcript = transcript_from_turns(data["turns"], str(data.get("language", "zh")), call_id)
    meta_raw = data.get("metadata")
    metadata = CallMetadata.model_validate(meta_raw) if meta_raw is not None else None
    return CallRecord(call_id, transcript, metadata)
