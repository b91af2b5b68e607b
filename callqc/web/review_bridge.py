"""The page's view of one call: the machine result and the human review side by side, redacted.

The workflow is ``callqc.review`` (the same functions the gRPC Review service calls); this module turns
its ``HumanView`` into the JSON the page renders and the page's button presses into ``ReviewAction``s.
Transcript text, finding evidence and reviewers' reasons pass through ``callqc.redaction`` (masks keep
text lengths, so finding spans still line up); stored reports are redacted already, this is a second net.
"""

from __future__ import annotations

from typing import Any

from callqc.jobs import JobStore
from callqc.models import Finding, Severity
from callqc.redaction import redact_findings, redact_report, redact_text
from callqc.report import Report
from callqc.review import ActionKind, ReviewAction, ReviewRecord, apply_action, human_view, load_review

# which permission-table entry each review action needs (the gateway's RPC for the same action)
ACTION_METHODS = {
    ActionKind.CONFIRM: "/callqc.v1.Review/SubmitReview",
    ActionKind.REJECT: "/callqc.v1.Review/SubmitReview",
    ActionKind.ADD: "/callqc.v1.Review/SubmitReview",
    ActionKind.COMPLETE: "/callqc.v1.Review/SubmitReview",
    ActionKind.APPEAL: "/callqc.v1.Review/AppealReview",
    ActionKind.FINALIZE: "/callqc.v1.Review/FinalizeReview",
}
HISTORY_SHOWN = 50


def call_payload(jobs: JobStore, report: Report, record: ReviewRecord | None = None) -> dict[str, Any]:
    """Transcript and findings (machine + human, with decisions) and the review summary, redacted."""
    record = record or load_review(jobs, report.batch_id, report.call_id)
    red = redact_report(report)
    view = human_view(red, record)
    transcript = [
        {"id": s.id, "role": s.role.value, "channel": s.channel, "start": s.start, "end": s.end, "text": s.text}
        for s in red.transcript
    ]
    findings = []
    masked = redact_findings([item.finding for item in view.findings])
    for item, finding in zip(view.findings, masked, strict=True):
        row = finding.model_dump(mode="json")
        row.update(
            key=item.id,
            origin=item.origin,
            human={"decision": item.decision.value, "reason": redact_text(item.reason)},
        )
        findings.append(row)
    review = {
        "state": view.state.value,
        "revision": view.revision,
        "machine_score": view.machine_score,
        "machine_verdict": view.machine_verdict,
        "score": view.score,
        "verdict": view.verdict,
        "reasons": view.reasons,
        "human_edited": view.human_edited,
        "report_changed": view.report_changed,
        "reviewers": list(record.reviewers),
        "updated_at": record.updated_at,
        "history": [
            {
                "revision": e.revision,
                "at": e.at,
                "actor": e.actor,
                "kind": e.kind.value,
                "finding_id": e.finding_id,
                "reason": redact_text(e.reason),
                "to_state": e.to_state.value,
            }
            for e in record.history[-HISTORY_SHOWN:]
        ],
    }
    return {"transcript": transcript, "findings": findings, "review": review}


def review_status(jobs: JobStore, batch_id: str, call_id: str) -> dict[str, Any]:
    """The human review's state of a call for the batch list (empty when nobody has acted)."""
    record = load_review(jobs, batch_id, call_id)
    if record.revision == 0:
        return {}
    return {"state": record.state.value, "revision": record.revision, "reviewers": list(record.reviewers)}


def _segments_in(report: Report, start: float, end: float) -> list[str]:
    return [s.id for s in report.transcript if s.start < end and s.end > start]


def parse_action(body: Any, report: Report) -> tuple[ReviewAction, int | None]:
    """A ``ReviewAction`` from the page's JSON (and the revision the person saw); ValueError if malformed.

    ``{"action": "confirm"|"reject", "finding": "m1", "reason": "…", "revision": 3}``,
    ``{"action": "add", "rule_id": "F03", "name": "…", "severity": "S1", "start": 16.9, "end": 19.0, "reason": "…"}``,
    ``{"action": "complete"|"appeal"|"finalize", "reason": "…"}``.
    """
    if not isinstance(body, dict):
        raise ValueError("want a JSON object")
    kind = ActionKind(str(body.get("action", "")))
    revision = body.get("revision")
    if revision is not None and (not isinstance(revision, int) or isinstance(revision, bool)):
        raise ValueError("revision must be an integer")
    reason = str(body.get("reason", ""))
    finding = None
    if kind == ActionKind.ADD:
        start, end = float(body["start"]), float(body["end"])
        if not 0 <= start < end or end > report.duration + 1:
            raise ValueError(f"span must satisfy 0 <= start < end <= {report.duration}")
        finding = Finding(
            rule_id=str(body.get("rule_id", "")).strip()[:32],
            name=str(body.get("name") or body.get("rule_id", "")).strip()[:200],
            severity=Severity(str(body.get("severity", ""))),
            category="human",
            source="human",
            segment_ids=_segments_in(report, start, end),
            start=round(start, 3),
            end=round(end, 3),
        )
    action = ReviewAction(kind=kind, finding_id=str(body.get("finding", "")), reason=reason, finding=finding)
    return action, revision


def apply(
    jobs: JobStore, report: Report, action: ReviewAction, *, actor: str, roles: list[str], revision: int | None
) -> dict[str, Any]:
    """Store the action as the review's next revision and return the updated payload (``ReviewError``s raise)."""
    record = apply_action(
        jobs, report.batch_id, report.call_id, action,
        actor=actor, roles=roles, expected_revision=revision, report=report,
    )  # fmt: skip
    return call_payload(jobs, report, record)
