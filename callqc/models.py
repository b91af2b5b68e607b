"""Typed data that travels between the stages: call specs, transcripts, findings, reports.

Everything here is plain pydantic so it serialises to JSON for S3 and crosses Ray
process boundaries as small structs (never audio bytes).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ChannelLayout(StrEnum):
    """How the recorder laid out the call's audio channels."""

    STEREO_AGENT_LEFT = "stereo_agent_left"
    STEREO_AGENT_RIGHT = "stereo_agent_right"
    MONO = "mono"


class Role(StrEnum):
    """Who spoke a segment."""

    AGENT = "agent"
    CUSTOMER = "customer"
    THIRD_PARTY = "third_party"
    UNKNOWN = "unknown"


class Severity(StrEnum):
    """S0 regulatory red line, S1 major, S2 service quality."""

    S0 = "S0"
    S1 = "S1"
    S2 = "S2"


class CallState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (CallState.DONE, CallState.FAILED)


class Ledger(BaseModel):
    """What the lender's books say the customer owes."""

    amount_due: float = Field(ge=0)
    overdue_days: int = Field(ge=0)


class CallMetadata(BaseModel):
    """Call facts from the dialler and the loan ledger (feed the M rules)."""

    agent_id: str = ""
    customer_id: str = ""
    call_started_at: datetime | None = None
    attempts_today: int = Field(default=0, ge=0)
    ledger: Ledger | None = None
    outsourced: bool = False
    principal: str = ""

    @field_validator("call_started_at")
    @classmethod
    def _must_have_time_zone(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.utcoffset() is None:
            raise ValueError("call_started_at must carry a time zone offset")
        return value


class CallSpec(BaseModel):
    """One call of a submitted batch, as stored in the manifest."""

    model_config = ConfigDict(frozen=True)

    call_id: str
    audio_key: str
    channel_layout: ChannelLayout = ChannelLayout.STEREO_AGENT_LEFT
    language: str = "zh"
    metadata: CallMetadata = Field(default_factory=CallMetadata)
    audio_sha256: str = ""  # when given, the stored audio must match it
    trace_context: dict[str, str] = Field(default_factory=dict)  # W3C trace context of the call's trace


class Word(BaseModel):
    text: str
    start: float
    end: float
    probability: float = 1.0


class Segment(BaseModel):
    """One utterance: a stretch of speech by one speaker, with audio times in seconds."""

    id: str
    role: Role
    channel: int = 0
    start: float
    end: float
    text: str
    words: list[Word] = Field(default_factory=list)


class Transcript(BaseModel):
    """The whole call, segments of all speakers merged in time order."""

    language: str
    duration: float
    segments: list[Segment] = Field(default_factory=list)

    def segment(self, segment_id: str) -> Segment:
        for seg in self.segments:
            if seg.id == segment_id:
                return seg
        raise KeyError(segment_id)


class Finding(BaseModel):
    """A suspected violation, missing required behaviour, or customer signal."""

    rule_id: str
    name: str
    severity: Severity
    category: str = ""
    source: str = "rule"  # rule | judge | both
    segment_ids: list[str] = Field(default_factory=list)
    start: float = 0.0
    end: float = 0.0
    evidence: str = ""
    confidence: float = 1.0
    rationale: str = ""
