"""Human review of a call's report: confirm / reject / add findings, states, history, re-scoring.

No gRPC and no Ray here: the gateway (``callqc.gateway.review_servicer``) and the reviewer web page
both call these functions.

**What is stored.** The machine report is never changed. Beside it, every revision of the review is
its own immutable object::

    reports/{batch_id}/review/{call_id}/{revision:06d}.json     one ReviewRecord per revision

written create-only through the (encrypted) store, so the full record at every revision stays
readable, and two writers racing for the same revision cannot both win (``ReviewConflict``). A
process-wide lock makes that exact within one process; across gateway replicas it is as exact as
the S3 server's create-only write. Revision 0 is the untouched draft (nothing stored yet).

**States.** ``draft → reviewed → appealed → reviewed → final`` (``final`` also straight from
``appealed``). Finding decisions are taken in ``draft`` and ``appealed``; ``final`` is immutable.

==============  ===================  ======================  ====================
action          from                 to                      who (``ACTION_ROLES``)
==============  ===================  ======================  ====================
confirm/reject  draft, appealed      (same)                  reviewer, qc_manager
add             draft, appealed      (same)                  reviewer, qc_manager
complete        draft, appealed      reviewed                reviewer, qc_manager
appeal          reviewed             appealed                qc_manager
finalize        reviewed, appealed   final                   qc_manager
==============  ===================  ======================  ====================

Every action needs a reason except ``confirm`` and ``complete``; each is appended to ``history``
with who, when (UTC), what, and the revision it produced. Reasons and the evidence of added findings
are masked (``callqc.redaction``) before they are stored.

**Finding ids.** Machine findings are ``m0``, ``m1``… (their index in the stored report, which is
immutable); findings a reviewer adds are ``h1``, ``h2``…

**Human view.** ``human_view(report, record)`` lays machine result and human edits side by side:
each finding with its origin and decision, the machine score / verdict, and the re-scored score /
verdict (``human_edited`` true once a human decided anything). Once the review is ``reviewed`` or
``final``, findings left undecided count as accepted as found.

Public API::

    load_review(store, batch_id, call_id) -> ReviewRecord             # revision 0 draft if none stored
    apply_action(store, batch_id, call_id, action, actor=..., roles=..., expected_revision=...) -> ReviewRecord
    human_view(report, record, scorecard=None) -> HumanView
    review_history(store, batch_id, call_id) -> list[ReviewRecord]     # every stored revision
    assign_reviewer(store, batch_id, reviewer, by=..., remove=False) / reviewers_of / assignments_of

``store`` is a ``callqc.jobs.JobStore`` or an object store (then the default ``reports/`` and
``jobs/`` prefixes are used).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from callqc.models import Finding
from callqc.redaction import redact_text
from callqc.scorecard import Scorecard, default_scorecard, score_report

if TYPE_CHECKING:
    from callqc.report import Report

__all__ = [
    "ACTION_ROLES",
    "ActionKind",
    "Decision",
    "HumanView",
    "ReviewAction",
    "ReviewConflict",
    "ReviewError",
    "ReviewEvent",
    "ReviewForbidden",
    "ReviewRecord",
    "ReviewState",
    "ReviewedFinding",
    "apply_action",
    "apply_to_record",
    "assign_reviewer",
    "assignments_of",
    "human_view",
    "load_review",
    "review_history",
    "reviewers_of",
]


class ReviewState(StrEnum):
    DRAFT = "draft"
    REVIEWED = "reviewed"
    APPEALED = "appealed"
    FINAL = "final"


class ActionKind(StrEnum):
    CONFIRM = "confirm"
    REJECT = "reject"
    ADD = "add"
    COMPLETE = "complete"
    APPEAL = "appeal"
    FINALIZE = "finalize"


class Decision(StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"


EDITABLE = frozenset({ReviewState.DRAFT, ReviewState.APPEALED})
TRANSITIONS: dict[ActionKind, tuple[frozenset[ReviewState], ReviewState]] = {
    ActionKind.COMPLETE: (frozenset({ReviewState.DRAFT, ReviewState.APPEALED}), ReviewState.REVIEWED),
    ActionKind.APPEAL: (frozenset({ReviewState.REVIEWED}), ReviewState.APPEALED),
    ActionKind.FINALIZE: (frozenset({ReviewState.REVIEWED, ReviewState.APPEALED}), ReviewState.FINAL),
}
ACTION_ROLES: dict[ActionKind, frozenset[str]] = {
    ActionKind.CONFIRM: frozenset({"reviewer", "qc_manager"}),
    ActionKind.REJECT: frozenset({"reviewer", "qc_manager"}),
    ActionKind.ADD: frozenset({"reviewer", "qc_manager"}),
    ActionKind.COMPLETE: frozenset({"reviewer", "qc_manager"}),
    ActionKind.APPEAL: frozenset({"qc_manager"}),
    ActionKind.FINALIZE: frozenset({"qc_manager"}),
}
REASON_REQUIRED = frozenset({ActionKind.REJECT, ActionKind.ADD, ActionKind.APPEAL, ActionKind.FINALIZE})
REASON_MAX = 2000


class ReviewError(ValueError):
    """The action is not valid here (bad state, unknown finding, missing reason): FAILED_PRECONDITION."""


class ReviewConflict(ReviewError):
    """The record changed since the caller read it (revision mismatch): ABORTED, re-read and retry."""


class ReviewForbidden(ReviewError):
    """None of the caller's roles may take this action: PERMISSION_DENIED."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class ReviewAction(BaseModel):
    """One thing a person does: decide on a finding, add one, or move the review to another state."""

    kind: ActionKind
    finding_id: str = ""  # confirm / reject: "m0".. (machine) or "h1".. (added)
    reason: str = ""
    finding: Finding | None = None  # add: the new finding (source is set to "human")


class ReviewEvent(BaseModel):
    """One entry of the history: who did what, when, and the revision it produced."""

    revision: int
    at: str
    actor: str
    roles: list[str] = Field(default_factory=list)
    kind: ActionKind
    finding_id: str = ""
    reason: str = ""
    from_state: ReviewState
    to_state: ReviewState
    finding: Finding | None = None  # the added finding (add only)


class ReviewRecord(BaseModel):
    """The human side of one call's review. Never holds the machine findings, only decisions on them."""

    call_id: str
    batch_id: str
    report_key: str = ""  # idempotency key of the report that was reviewed
    state: ReviewState = ReviewState.DRAFT
    revision: int = 0
    decisions: dict[str, Decision] = Field(default_factory=dict)  # finding id → latest decision
    reasons: dict[str, str] = Field(default_factory=dict)  # finding id → reason of the latest decision
    added: dict[str, Finding] = Field(default_factory=dict)  # "h1".. → finding a reviewer added
    reviewers: list[str] = Field(default_factory=list)  # everyone who acted, in order of first action
    history: list[ReviewEvent] = Field(default_factory=list)
    updated_at: str = ""

    @property
    def human_edited(self) -> bool:
        return bool(self.decisions)


class ReviewedFinding(BaseModel):
    """A finding in the human view: the finding, where it came from and what the reviewer decided."""

    id: str
    origin: str  # machine | human
    decision: Decision
    reason: str = ""
    finding: Finding


class HumanView(BaseModel):
    """Machine result and human edits side by side, re-scored."""

    call_id: str
    batch_id: str
    state: ReviewState
    revision: int
    findings: list[ReviewedFinding]
    machine_score: float | None
    machine_verdict: str
    score: float
    verdict: str
    reasons: list[str]
    human_edited: bool
    report_changed: bool = False  # the report was re-generated after the review started


# ---- pure logic ------------------------------------------------------------------------------


def _role_names(roles: Iterable[str] | str) -> set[str]:
    if isinstance(roles, str):
        return {r.strip() for r in roles.split(",") if r.strip()}
    return {str(r) for r in roles}


def new_record(batch_id: str, call_id: str, report: Report | None = None) -> ReviewRecord:
    return ReviewRecord(call_id=call_id, batch_id=batch_id, report_key=report.idempotency_key if report else "")


def apply_to_record(
    record: ReviewRecord,
    action: ReviewAction,
    *,
    actor: str,
    roles: Iterable[str] | str = (),
    expected_revision: int | None = None,
    report: Report | None = None,
    now: str | None = None,
) -> ReviewRecord:
    """The record after ``action`` (a new object; ``record`` is not changed). Raises ``ReviewError``s."""
    names = _role_names(roles)
    if not names & ACTION_ROLES[action.kind]:
        allowed = ", ".join(sorted(ACTION_ROLES[action.kind]))
        raise ReviewForbidden(f"{actor} ({', '.join(sorted(names)) or 'no role'}) may not {action.kind}; {allowed} may")
    if expected_revision is not None and expected_revision != record.revision:
        raise ReviewConflict(
            f"review of {record.call_id} is at revision {record.revision}, not {expected_revision}: re-read it"
        )
    reason = redact_text(action.reason.strip())  # stored and shown: no ID / phone / card numbers in reasons
    if action.kind in REASON_REQUIRED and not reason:
        raise ReviewError(f"{action.kind} needs a reason")
    if len(reason) > REASON_MAX:
        raise ReviewError(f"reason is longer than {REASON_MAX} characters")
    rec = record.model_copy(deep=True)
    if report is not None and not rec.report_key:
        rec.report_key = report.idempotency_key
    before = rec.state
    event_finding: Finding | None = None
    finding_id = action.finding_id

    if action.kind in TRANSITIONS:
        sources, target = TRANSITIONS[action.kind]
        if rec.state not in sources:
            raise ReviewError(f"cannot {action.kind} a review in state {rec.state} (from {sorted(sources)} only)")
        rec.state = target
        finding_id = ""
    else:
        if rec.state not in EDITABLE:
            raise ReviewError(f"findings cannot be changed in state {rec.state} (only in draft or appealed)")
        if action.kind == ActionKind.ADD:
            if action.finding is None:
                raise ReviewError("add needs a finding")
            if not action.finding.rule_id or not action.finding.name:
                raise ReviewError("an added finding needs a rule id and a name")
            finding_id = f"h{len(rec.added) + 1}"
            event_finding = action.finding.model_copy(
                update={
                    "source": "human",
                    "confidence": 1.0,
                    "evidence": redact_text(action.finding.evidence),
                    "rationale": redact_text(action.finding.rationale),
                }
            )
            rec.added[finding_id] = event_finding
            rec.decisions[finding_id] = Decision.CONFIRMED
        else:
            _check_finding_id(finding_id, rec, report)
            rec.decisions[finding_id] = Decision.CONFIRMED if action.kind == ActionKind.CONFIRM else Decision.REJECTED
        rec.reasons[finding_id] = reason

    rec.revision += 1
    rec.updated_at = now or _now()
    if actor not in rec.reviewers:
        rec.reviewers.append(actor)
    rec.history.append(
        ReviewEvent(
            revision=rec.revision,
            at=rec.updated_at,
            actor=actor,
            roles=sorted(names),
            kind=action.kind,
            finding_id=finding_id,
            reason=reason,
            from_state=before,
            to_state=rec.state,
            finding=event_finding,
        )
    )
    return rec


def _check_finding_id(finding_id: str, record: ReviewRecord, report: Report | None) -> None:
    if finding_id in record.added:
        return
    if finding_id.startswith("m") and finding_id[1:].isdigit():
        index = int(finding_id[1:])
        if report is None or index < len(report.findings):
            return
    raise ReviewError(f"no finding {finding_id!r} in this report")


def human_view(report: Report, record: ReviewRecord, scorecard: Scorecard | None = None) -> HumanView:
    """Machine findings + human edits, and the score / verdict re-computed from what the human kept."""
    done = record.state in (ReviewState.REVIEWED, ReviewState.FINAL)
    items: list[ReviewedFinding] = []
    for index, finding in enumerate(report.findings):
        fid = f"m{index}"
        decision = record.decisions.get(fid, Decision.PENDING)
        items.append(
            ReviewedFinding(
                id=fid, origin="machine", decision=decision, reason=record.reasons.get(fid, ""), finding=finding
            )
        )
    for fid, finding in record.added.items():
        decision = record.decisions.get(fid, Decision.CONFIRMED)
        items.append(
            ReviewedFinding(
                id=fid, origin="human", decision=decision, reason=record.reasons.get(fid, ""), finding=finding
            )
        )
    kept = [item for item in items if item.decision != Decision.REJECTED]
    confirmed = {i for i, item in enumerate(kept) if done or item.decision == Decision.CONFIRMED}
    if record.human_edited or done:
        scored = score_report(
            [item.finding for item in kept],
            scorecard or default_scorecard(),
            judge_status="" if done else report.judge.status,
            roles=None if done else report.roles,
            confirmed=confirmed,
        )
        score, verdict, reasons = scored
    else:
        score, verdict, reasons = report.score, report.verdict, list(report.needs_review_reasons)
        if score is None:  # a report from before scorecards
            score, verdict, reasons = score_report(report.findings, scorecard or default_scorecard())
    return HumanView(
        call_id=report.call_id,
        batch_id=report.batch_id,
        state=record.state,
        revision=record.revision,
        findings=items,
        machine_score=report.score,
        machine_verdict=report.verdict,
        score=score,
        verdict=verdict,
        reasons=reasons,
        human_edited=record.human_edited,
        report_changed=bool(record.report_key) and record.report_key != report.idempotency_key,
    )


# ---- persistence -----------------------------------------------------------------------------

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock(key: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


def _prefixes(store: Any) -> tuple[Any, str, str]:
    """(object store, reports prefix, jobs prefix) of a JobStore or a plain object store."""
    if hasattr(store, "reports") and hasattr(store, "store"):
        return store.store, store.reports, store.jobs
    return store, "reports/", "jobs/"


def _review_prefix(reports: str, batch_id: str, call_id: str) -> str:
    for part in (batch_id, call_id):
        if not part or "/" in part or part.strip(".") == "":
            raise ReviewError(f"bad id {part!r}")
    return f"{reports}{batch_id}/review/{call_id}/"


def _revision_keys(objects: Any, prefix: str) -> list[tuple[int, str]]:
    out = []
    for key in objects.list_keys(prefix):
        name = key.removeprefix(prefix).removesuffix(".json")
        if name.isdigit():
            out.append((int(name), key))
    return sorted(out)


def load_review(store: Any, batch_id: str, call_id: str) -> ReviewRecord:
    """The latest revision of the review of ``call_id`` in ``batch_id`` (a revision-0 draft if none)."""
    objects, reports, _jobs = _prefixes(store)
    keys = _revision_keys(objects, _review_prefix(reports, batch_id, call_id))
    if not keys:
        return new_record(batch_id, call_id)
    return ReviewRecord.model_validate_json(objects.get_bytes(keys[-1][1]))


def review_history(store: Any, batch_id: str, call_id: str) -> list[ReviewRecord]:
    """Every stored revision, oldest first (each is the whole record as it was then)."""
    objects, reports, _jobs = _prefixes(store)
    keys = _revision_keys(objects, _review_prefix(reports, batch_id, call_id))
    return [ReviewRecord.model_validate_json(objects.get_bytes(k)) for _n, k in keys]


def apply_action(
    store: Any,
    batch_id: str,
    call_id: str,
    action: ReviewAction,
    *,
    actor: str,
    roles: Iterable[str] | str = (),
    expected_revision: int | None = None,
    report: Report | None = None,
) -> ReviewRecord:
    """Load, apply ``action``, store the new revision (create-only). Raises ``ReviewError``s.

    Pass ``expected_revision`` (the revision the person saw) so a concurrent change is refused rather
    than silently overwritten; pass ``report`` so finding ids are checked against it.
    """
    objects, reports, _jobs = _prefixes(store)
    prefix = _review_prefix(reports, batch_id, call_id)
    with _lock(prefix):
        current = load_review(store, batch_id, call_id)
        updated = apply_to_record(
            current, action, actor=actor, roles=roles, expected_revision=expected_revision, report=report
        )
        key = f"{prefix}{updated.revision:06d}.json"
        if not objects.put_if_absent(key, updated.model_dump_json().encode()):
            raise ReviewConflict(f"review of {call_id} was changed by someone else (revision {updated.revision})")
    return updated


# ---- reviewer assignments --------------------------------------------------------------------


class Assignment(BaseModel):
    batch_id: str
    reviewers: list[str] = Field(default_factory=list)
    history: list[dict[str, str]] = Field(default_factory=list)  # {at, by, reviewer, change: assign|remove}


def _assignment_keys(jobs: str, batch_id: str = "", reviewer: str = "") -> str:
    if batch_id:
        return f"{jobs}assignments/batch/{batch_id}.json"
    return f"{jobs}assignments/reviewer/{reviewer}.json"


def _get_json(objects: Any, key: str) -> Any | None:
    from callqc.security.store import get_or_none

    raw = get_or_none(objects, key)
    return None if raw is None else json.loads(raw)


def reviewers_of(store: Any, batch_id: str) -> Assignment:
    """Who is assigned to review ``batch_id`` (with the history of changes)."""
    objects, _reports, jobs = _prefixes(store)
    data = _get_json(objects, _assignment_keys(jobs, batch_id=batch_id))
    return Assignment.model_validate(data) if data else Assignment(batch_id=batch_id)


def assignments_of(store: Any, reviewer: str) -> list[str]:
    """Batch ids assigned to ``reviewer``."""
    objects, _reports, jobs = _prefixes(store)
    data = _get_json(objects, _assignment_keys(jobs, reviewer=reviewer))
    return list(data.get("batches", [])) if data else []


def assign_reviewer(store: Any, batch_id: str, reviewer: str, *, by: str, remove: bool = False) -> Assignment:
    """Assign (or with ``remove`` unassign) ``reviewer`` to ``batch_id``; both indexes are updated."""
    from callqc.security.login import validate_username

    reviewer = validate_username(reviewer)
    objects, _reports, jobs = _prefixes(store)
    batch_key = _assignment_keys(jobs, batch_id=batch_id)
    with _lock(batch_key):
        current = reviewers_of(store, batch_id)
        names = [r for r in current.reviewers if r != reviewer] + ([] if remove else [reviewer])
        change = {"at": _now(), "by": by, "reviewer": reviewer, "change": "remove" if remove else "assign"}
        updated = Assignment(batch_id=batch_id, reviewers=names, history=[*current.history, change])
        objects.put_bytes(batch_key, updated.model_dump_json().encode(), content_type="application/json")
    reviewer_key = _assignment_keys(jobs, reviewer=reviewer)
    with _lock(reviewer_key):
        batches = [b for b in assignments_of(store, reviewer) if b != batch_id] + ([] if remove else [batch_id])
        objects.put_bytes(reviewer_key, json.dumps({"batches": batches}).encode(), content_type="application/json")
    return updated
