"""What the page's script renders: plain JSON built from the stored report and its human review.

Transcript text and finding evidence are shown redacted (``callqc.redaction`` through
``callqc.review.human_view``); timings, rule ids and severities are not personal data and pass as they are.
"""

from __future__ import annotations

from typing import Any

from callqc.report import Report

VERDICT_ORDER = {"fail": 0, "needs_review": 1, "pass": 2}
SEVERITY_ORDER = {"S0": 0, "S1": 1, "S2": 2}


def top_severity(report: Report) -> str:
    """The most serious severity among the report's findings ('' when none)."""
    severities = [f.severity.value for f in report.findings]
    return min(severities, key=SEVERITY_ORDER.__getitem__) if severities else ""


def batch_row(call_id: str, state: str, report: Report | None, review: dict[str, Any] | None = None) -> dict[str, Any]:
    """One line of the batch page (``review``: state, revision, reviewers of the human review; empty if none)."""
    row: dict[str, Any] = {"call_id": call_id, "state": state, "verdict": "", "top_severity": "", "score": None}
    if report is not None:
        counts: dict[str, int] = {}
        for f in report.findings:
            counts[f.severity.value] = counts.get(f.severity.value, 0) + 1
        row.update(
            verdict=report.verdict,
            top_severity=top_severity(report),
            score=report.score,
            findings=len(report.findings),
            by_severity=counts,
            duration=report.duration,
            language=report.language,
        )
    row["review"] = review or {}
    return row


def batch_sort_key(row: dict[str, Any]) -> tuple[int, int, str]:
    """Verdict first (fail, needs_review, pass, no report yet), then highest severity, then call id."""
    return (
        VERDICT_ORDER.get(row["verdict"], len(VERDICT_ORDER)),
        SEVERITY_ORDER.get(row["top_severity"], len(SEVERITY_ORDER)),
        row["call_id"],
    )


def header_of(report: Report) -> dict[str, Any]:
    """The call page's header: verdict, score, versions and why it needs review."""
    return {
        "call_id": report.call_id,
        "batch_id": report.batch_id,
        "verdict": report.verdict,
        "score": report.score,
        "language": report.language,
        "duration": report.duration,
        "created_at": report.created_at,
        "versions": report.versions.model_dump(),
        "needs_review_reasons": list(report.needs_review_reasons),
        "top_severity": top_severity(report),
    }
