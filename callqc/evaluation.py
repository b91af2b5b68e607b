"""Evaluation of rules (+ judge) against a labelled JSONL of transcripts: precision / recall per check id.

The format extends the rules JSONL (``callqc rules check``) with ``labels``; one call per line::

    {"call_id": "d01", "language": "zh",
     "turns": [{"speaker": "agent", "text": "您好…", "start": 0.0, "end": 4.2}, ...],
     "metadata": {"call_started_at": "2026-11-02T10:05:00+08:00", "attempts_today": 1,
                  "ledger": {"amount_due": 30000, "overdue_days": 30}},
     "labels": [{"rule_id": "F03", "turn": 5}],
     "tags": ["hard_negative"], "note": "free text"}

``speaker`` is agent | customer | third_party; ``start``/``end`` are seconds (required, ``end >= start``);
``metadata`` holds ``CallMetadata`` fields (``call_started_at`` must carry a UTC offset). ``labels`` are the
true violations / signals: ``rule_id`` a check id of COMPLIANCE_RULES.md (F01–F18, R01–R09, C01–C08) and
``turn`` the 0-based index of the turn that shows it. An empty ``labels`` list is a compliant call.

Matching (see tests/data/eval/README.md):

* turn-level ids: a finding matches a label when the rule id is equal and the labelled turn is among the
  finding's segments (``segment_ids``; a finding without segment ids covers the turns its ``start``–``end``
  overlaps). Each label is found (TP) or missed (FN); each finding that matches no label is a FP; a second
  finding on an already-matched label is a *duplicate* (neither TP nor FP).
* call-level ids (``CALL_LEVEL_IDS``: missing required phrases R01/R04/R05/R09 and the metadata checks
  F15/F16): one unit per call and id; the rule id alone decides, ``turn`` is optional and ignored.

Precision = TP / (TP + FP), recall = TP / (TP + FN), per id and micro-averaged (overall and per group:
prohibited F, required R, customer signals C). The false-positive rate on compliant calls is the share
of calls with no agent-side label (no F/R label; customer signals allowed) that got ≥ 1 agent-side finding.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from callqc.models import CallMetadata, Finding, JudgeSummary, Role, Segment, Transcript
from callqc.rules.engine import RuleEngine

DEV_SET = Path(__file__).resolve().parent.parent / "tests" / "data" / "eval" / "devset.jsonl"

ALL_IDS: tuple[str, ...] = (
    *(f"F{i:02d}" for i in range(1, 19)),
    *(f"R{i:02d}" for i in range(1, 10)),
    *(f"C{i:02d}" for i in range(1, 9)),
)
CALL_LEVEL_IDS = frozenset({"R01", "R04", "R05", "R09", "F15", "F16"})
GROUPS = {"prohibited": "F", "required": "R", "customer": "C"}
_ID_RE = re.compile(r"^(F(0[1-9]|1[0-8])|R0[1-9]|C0[1-8])$")
_ROLES = {"agent": Role.AGENT, "customer": Role.CUSTOMER, "third_party": Role.THIRD_PARTY}


def is_agent_id(rule_id: str) -> bool:
    """F and R checks are about the agent; C checks are customer signals."""
    return not rule_id.startswith("C")


# ---- the labelled format -----------------------------------------------------------------------


class LabelledTurn(BaseModel):
    speaker: Literal["agent", "customer", "third_party"]
    text: str = Field(min_length=1)
    start: float = Field(ge=0)
    end: float = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> LabelledTurn:
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        return self


class Label(BaseModel):
    rule_id: str
    turn: int | None = None  # required for turn-level ids, optional for CALL_LEVEL_IDS
    note: str = ""

    @field_validator("rule_id")
    @classmethod
    def _known_id(cls, value: str) -> str:
        if not _ID_RE.match(value):
            raise ValueError(f"unknown rule id {value!r} (expected F01–F18, R01–R09 or C01–C08)")
        return value

    @model_validator(mode="after")
    def _turn_when_needed(self) -> Label:
        if self.turn is None and self.rule_id not in CALL_LEVEL_IDS:
            raise ValueError(f"label {self.rule_id} needs a turn index (only call-level ids may omit it)")
        return self


class LabelledCall(BaseModel):
    call_id: str = Field(min_length=1)
    language: str = "zh"
    turns: list[LabelledTurn] = Field(min_length=1)
    metadata: CallMetadata = Field(default_factory=CallMetadata)
    labels: list[Label] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    note: str = ""

    @model_validator(mode="after")
    def _labels_point_at_turns(self) -> LabelledCall:
        seen: set[tuple[str, int | None]] = set()
        for k, label in enumerate(self.labels):
            if label.turn is not None and not 0 <= label.turn < len(self.turns):
                raise ValueError(
                    f"labels[{k}] ({label.rule_id}): turn {label.turn} is out of range "
                    f"(the call has {len(self.turns)} turns)"
                )
            key = (label.rule_id, None if label.rule_id in CALL_LEVEL_IDS else label.turn)
            if key in seen:
                raise ValueError(f"labels[{k}]: {label.rule_id} on turn {label.turn} is labelled twice")
            seen.add(key)
        return self

    @property
    def compliant(self) -> bool:
        """No agent-side label (customer signals may be present)."""
        return not any(is_agent_id(label.rule_id) for label in self.labels)

    def segment_id(self, turn: int) -> str:
        return f"{self.call_id}-{turn}"

    def transcript(self) -> Transcript:
        segments = [
            Segment(id=self.segment_id(i), role=_ROLES[t.speaker], start=t.start, end=t.end, text=t.text)
            for i, t in enumerate(self.turns)
        ]
        return Transcript(language=self.language, duration=max(t.end for t in self.turns), segments=segments)


class DatasetError(ValueError):
    """A labelled JSONL that cannot be used: names the file, the line and the field."""


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "record"
        message = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def parse_call(line: str | bytes | dict) -> LabelledCall:
    """One JSONL record → ``LabelledCall``; raises ``DatasetError`` with the failing field."""
    try:
        data = json.loads(line) if isinstance(line, str | bytes) else line
    except json.JSONDecodeError as exc:
        raise DatasetError(f"not JSON: {exc}") from None
    try:
        return LabelledCall.model_validate(data)
    except ValidationError as exc:
        raise DatasetError(_describe(exc)) from None


def load_dataset(path: Path) -> list[LabelledCall]:
    """Read and validate a labelled JSONL; errors name ``path:line`` and the field."""
    calls: list[LabelledCall] = []
    ids: set[str] = set()
    with path.open(encoding="utf-8") as lines:
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                call = parse_call(line)
            except DatasetError as exc:
                raise DatasetError(f"{path}:{lineno}: {exc}") from None
            if call.call_id in ids:
                raise DatasetError(f"{path}:{lineno}: call_id {call.call_id!r} appears twice")
            ids.add(call.call_id)
            calls.append(call)
    if not calls:
        raise DatasetError(f"{path}: no calls")
    return calls


# ---- matching ---------------------------------------------------------------------------------


def finding_turns(call: LabelledCall, finding: Finding) -> set[int]:
    """Turn indices a finding points at: its segment ids, else the turns its time span overlaps."""
    by_id = {call.segment_id(i): i for i in range(len(call.turns))}
    turns = {by_id[s] for s in finding.segment_ids if s in by_id}
    if not turns and finding.end > finding.start:
        turns = {i for i, t in enumerate(call.turns) if t.start < finding.end and t.end > finding.start}
    return turns


@dataclass
class CallMatch:
    """Outcome of one call for one rule id."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    duplicates: int = 0
    missed_turns: tuple[int | None, ...] = ()
    false_turns: tuple[tuple[int, ...], ...] = ()  # the turns of each unmatched finding


def match_call(call: LabelledCall, findings: Sequence[Finding]) -> dict[str, CallMatch]:
    """Per rule id: labels found / missed and findings that match no label (see the module doc)."""
    by_id: dict[str, list[Finding]] = {}
    for f in findings:
        by_id.setdefault(f.rule_id, []).append(f)
    labels: dict[str, list[Label]] = {}
    for label in call.labels:
        labels.setdefault(label.rule_id, []).append(label)
    out: dict[str, CallMatch] = {}
    for rule_id in sorted(set(by_id) | set(labels)):
        preds, golds = by_id.get(rule_id, []), labels.get(rule_id, [])
        if rule_id in CALL_LEVEL_IDS:
            hit = bool(preds) and bool(golds)
            out[rule_id] = CallMatch(
                tp=int(hit),
                fp=int(bool(preds) and not golds),
                fn=int(bool(golds) and not preds),
                duplicates=max(0, len(preds) - 1),
                missed_turns=(None,) if golds and not preds else (),
                false_turns=((),) if preds and not golds else (),
            )
            continue
        gold_turns = {label.turn for label in golds}
        matched: set[int] = set()
        fp, dup, false_turns = 0, 0, []
        for f in preds:
            covered = finding_turns(call, f) & gold_turns
            if not covered:
                fp += 1
                false_turns.append(tuple(sorted(finding_turns(call, f))))
            elif covered <= matched:
                dup += 1
            matched |= covered
        missed = tuple(sorted(t for t in gold_turns if t not in matched))  # type: ignore[type-var]
        out[rule_id] = CallMatch(len(matched), fp, len(missed), dup, missed, tuple(false_turns))
    return out


# ---- metrics ----------------------------------------------------------------------------------


class Score(BaseModel):
    """Counts and ratios of one id (or a micro-averaged group). ``None`` ratios are undefined (0/0)."""

    rule_id: str
    labels: int = 0
    findings: int = 0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    duplicates: int = 0
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None

    def add(self, m: CallMatch) -> None:
        self.tp += m.tp
        self.fp += m.fp
        self.fn += m.fn
        self.duplicates += m.duplicates

    def finish(self) -> Score:
        self.labels = self.tp + self.fn
        self.findings = self.tp + self.fp
        self.precision = round(self.tp / (self.tp + self.fp), 4) if self.tp + self.fp else None
        self.recall = round(self.tp / (self.tp + self.fn), 4) if self.tp + self.fn else None
        p, r = self.precision, self.recall
        self.f1 = round(2 * p * r / (p + r), 4) if p is not None and r is not None and p + r > 0 else None
        return self


class CallOutcome(BaseModel):
    """One call's errors, for reading what went wrong (``missed``/``false``: 'F03@5', 'R01@call')."""

    call_id: str
    compliant: bool
    missed: list[str] = Field(default_factory=list)
    false: list[str] = Field(default_factory=list)
    judge_status: str = ""


class EvalResult(BaseModel):
    data: str
    pack_version: str
    judge: str = "none"  # none | <engine>:<model>
    calls: int
    labels: int
    compliant_calls: int
    compliant_flagged: int
    fp_rate_compliant: float | None
    per_id: list[Score]
    groups: list[Score]
    overall: Score
    judge_needs_review: int = 0
    seconds: float = 0.0
    outcomes: list[CallOutcome] = Field(default_factory=list)

    def worst(self, n: int = 5) -> list[Score]:
        """Ids with the lowest F1 (undefined F1 with labels or findings counts as 0)."""
        scored = [s for s in self.per_id if s.labels or s.findings]
        return sorted(scored, key=lambda s: (s.f1 or 0.0, -(s.fn + s.fp), s.rule_id))[:n]


def _where(turn: int | tuple[int, ...] | None) -> str:
    if turn is None or turn == ():
        return "call"
    if isinstance(turn, tuple):
        return ",".join(str(t) for t in turn)
    return str(turn)


def score(
    calls: Sequence[LabelledCall],
    findings: Sequence[Sequence[Finding]],
    *,
    data: str = "",
    pack_version: str = "",
    judge: str = "none",
    summaries: Sequence[JudgeSummary | None] | None = None,
    seconds: float = 0.0,
) -> EvalResult:
    """Match every call's findings against its labels and aggregate."""
    if len(calls) != len(findings):
        raise ValueError(f"{len(calls)} calls but {len(findings)} finding lists")
    per_id = {rule_id: Score(rule_id=rule_id) for rule_id in ALL_IDS}
    outcomes: list[CallOutcome] = []
    flagged = 0
    needs_review = 0
    for k, (call, found) in enumerate(zip(calls, findings, strict=True)):
        outcome = CallOutcome(call_id=call.call_id, compliant=call.compliant)
        summary = summaries[k] if summaries is not None else None
        if summary is not None:
            outcome.judge_status = summary.status
            needs_review += summary.status == "needs_review"
        for rule_id, m in match_call(call, found).items():
            per_id.setdefault(rule_id, Score(rule_id=rule_id)).add(m)
            outcome.missed += [f"{rule_id}@{_where(t)}" for t in m.missed_turns]
            outcome.false += [f"{rule_id}@{_where(t)}" for t in m.false_turns]
        if call.compliant and any(is_agent_id(f.rule_id) for f in found):
            flagged += 1
        outcomes.append(outcome)
    scores = [s.finish() for s in per_id.values()]
    groups = []
    for name, prefix in GROUPS.items():
        group = Score(rule_id=name)
        for s in scores:
            if s.rule_id.startswith(prefix):
                group.add(CallMatch(s.tp, s.fp, s.fn, s.duplicates))
        groups.append(group.finish())
    overall = Score(rule_id="overall")
    for s in scores:
        overall.add(CallMatch(s.tp, s.fp, s.fn, s.duplicates))
    compliant = sum(c.compliant for c in calls)
    return EvalResult(
        data=data,
        pack_version=pack_version,
        judge=judge,
        calls=len(calls),
        labels=sum(len(c.labels) for c in calls),
        compliant_calls=compliant,
        compliant_flagged=flagged,
        fp_rate_compliant=round(flagged / compliant, 4) if compliant else None,
        per_id=scores,
        groups=groups,
        overall=overall.finish(),
        judge_needs_review=needs_review,
        seconds=round(seconds, 3),
        outcomes=outcomes,
    )


# ---- running ----------------------------------------------------------------------------------


class Reviewer(Protocol):
    """What the harness needs of a judge (``callqc.judge.Judge`` has this shape): rule findings in as
    candidates, merged findings out, one entry per call in order."""

    def review_many(
        self, calls: list[tuple[Transcript, CallMetadata, list[Finding]]]
    ) -> list[tuple[list[Finding], JudgeSummary]]: ...


def evaluate(
    calls: Sequence[LabelledCall],
    engine: RuleEngine,
    judge: Reviewer | None = None,
    *,
    judge_name: str = "none",
    data: str = "",
    judge_batch: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Rules over every call (one batch scan), then the judge if given (``judge_batch`` calls per
    ``review_many``; ``progress(done, total)`` after each), then ``score``."""
    started = time.perf_counter()
    transcripts = [c.transcript() for c in calls]
    rule_findings = engine.evaluate_many(transcripts, [c.metadata for c in calls])
    summaries: list[JudgeSummary | None] = [None] * len(calls)
    findings: list[list[Finding]] = rule_findings
    if judge is not None:
        inputs = [(t, c.metadata, f) for t, c, f in zip(transcripts, calls, rule_findings, strict=True)]
        reviewed: list[tuple[list[Finding], JudgeSummary]] = []
        for k in range(0, len(inputs), max(1, judge_batch)):
            batch = inputs[k : k + max(1, judge_batch)]
            out = judge.review_many(batch)
            if len(out) != len(batch):
                raise ValueError(f"the judge returned {len(out)} results for {len(batch)} calls")
            reviewed += out
            if progress is not None:
                progress(len(reviewed), len(inputs))
        findings = [merged for merged, _ in reviewed]
        summaries = [summary for _, summary in reviewed]
    return score(
        calls,
        findings,
        data=data,
        pack_version=engine.version,
        judge=judge_name,
        summaries=summaries,
        seconds=time.perf_counter() - started,
    )


def coverage(calls: Iterable[LabelledCall]) -> dict[str, int]:
    """How many labels each id has in a data set (every id, zeros included)."""
    counts = dict.fromkeys(ALL_IDS, 0)
    for call in calls:
        for label in call.labels:
            counts[label.rule_id] += 1
    return counts
