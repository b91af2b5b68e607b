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


# ---- speakers and conversation (issue 4) ----------------------------------------------------


class SpeakerTurn(BaseModel):
    """Diarization output: who (an anonymous label such as ``spk0``) spoke from start to end."""

    speaker: str
    start: float
    end: float


class RoleAssignment(BaseModel):
    """How segments got their roles: channel map (exact) or cues on a mono call (with a confidence)."""

    method: str = "channel"  # channel | cues | none
    speaker_roles: dict[str, Role] = Field(default_factory=dict)  # diarization label → role (mono calls)
    confidence: float = 1.0
    needs_review: bool = False
    cues: list[str] = Field(default_factory=list)  # human-readable reasons, e.g. "spk0 said 我是…工号"


class RaisedVoice(BaseModel):
    """A stretch where one side's loudness stayed well above its own median (an intimidation signal)."""

    role: Role
    start: float
    end: float
    peak_db: float  # dBFS
    above_median_db: float


class LoudnessPoint(BaseModel):
    role: Role
    time: float
    db: float  # dBFS of a 1 s window


class RoleMetrics(BaseModel):
    role: Role
    talk_seconds: float = 0.0
    segments: int = 0
    speech_rate_cpm: float = 0.0  # characters (zh) or words (en) per minute of talk
    interruptions: int = 0  # times this role started speaking while the other was mid-segment
    median_db: float | None = None


class ConversationMetrics(BaseModel):
    duration: float = 0.0
    silence_seconds: float = 0.0
    longest_silence_seconds: float = 0.0
    overlap_seconds: float = 0.0
    agent_customer_talk_ratio: float | None = None
    roles: list[RoleMetrics] = Field(default_factory=list)
    loudness: list[LoudnessPoint] = Field(default_factory=list)
    raised_voice: list[RaisedVoice] = Field(default_factory=list)


# ---- LLM judge (issue 6) ----------------------------------------------------------------------


class EmotionStretch(BaseModel):
    """One side's state over a stretch of the call, as the judge read it."""

    role: Role
    start: float
    end: float
    state: str  # calm | anxious | angry | distressed
    hostile: bool = False  # agent only: hostile / intimidating tone
    segment_ids: list[str] = Field(default_factory=list)


class JudgeSummary(BaseModel):
    """What the judge did for this call (its verdicts are merged into the report's findings)."""

    status: str = "skipped"  # ok | needs_review (invalid output twice / engine gave up) | skipped
    engine: str = ""
    model: str = ""
    prompt_version: str = ""
    chunks: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    rejected_candidates: list[str] = Field(default_factory=list)  # rule ids the judge found not to be violations
    emotions: list[EmotionStretch] = Field(default_factory=list)
    error: str = ""
