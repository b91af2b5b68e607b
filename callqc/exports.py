"""Exports for the bank's BI: findings of a batch as CSV / JSONL, and the daily coverage figure.

**Findings export.** One row per finding of every inspected call of the batch, in manifest order;
a call with no finding still gets one row (finding columns empty), so the export also lists every
inspected call with its verdict and score. With the review view (default), each row carries the
human decision and the re-scored result next to the machine's; findings a reviewer added appear
with ``origin=human``. Evidence and rationale are masked again on the way out (``callqc.redaction``;
stored reports are already redacted, this also covers reports stored before redaction existed).
Stdlib ``csv`` (UTF-8 with BOM, so Excel opens Chinese text) and ``json``.

**Coverage.** For a calendar day in the bank's time zone (default UTC+08:00): *received* = calls in
batches whose manifest was created that day (intake rejections included: they were received and not
inspected), *inspected* = those of them with a stored report, ``coverage = inspected / received``.
Cost: one delimiter LIST of ``jobs/batches/`` (one entry per batch, never per call), one GET per batch
manifest not seen before by this process (manifests are immutable, their creation day is cached),
and one LIST of ``reports/{batch}/`` per batch of that day.
"""

from __future__ import annotations

import csv
import io
import json
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

from callqc.jobs import BatchManifest, JobStore
from callqc.models import CallSpec, Finding
from callqc.redaction import redact_text
from callqc.report import Report
from callqc.review import human_view, load_review
from callqc.storage import ObjectNotFound

__all__ = [
    "EXPORT_COLUMNS",
    "Coverage",
    "coverage_for_day",
    "export_rows",
    "parse_utc_offset",
    "rows_to_csv",
    "rows_to_jsonl",
]

EXPORT_COLUMNS = [
    "batch_id",
    "call_id",
    "agent_id",
    "report_created_at",
    "machine_verdict",
    "machine_score",
    "review_state",
    "human_edited",
    "verdict",
    "score",
    "finding_id",
    "origin",
    "decision",
    "rule_id",
    "name",
    "severity",
    "category",
    "source",
    "confidence",
    "start",
    "end",
    "segment_ids",
    "evidence",
    "rationale",
    "decision_reason",
]


def export_rows(
    jobs: JobStore, manifest: BatchManifest, *, reviewed: bool = True, threads: int = 8
) -> Iterator[dict[str, Any]]:
    """Rows of the findings export of ``manifest``'s batch (see the module doc), in manifest order.

    Reports (and review records) are read ``threads`` calls at a time.
    """
    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="export") as pool:
        for rows in pool.map(lambda spec: _call_rows(jobs, manifest.batch_id, spec, reviewed), manifest.calls):
            yield from rows


def _call_rows(jobs: JobStore, batch_id: str, spec: CallSpec, reviewed: bool) -> list[dict[str, Any]]:
    try:
        report = Report.model_validate_json(jobs.get_report(spec.call_id, batch_id))
    except ObjectNotFound:
        return []  # not inspected (yet): counted by coverage, not exported
    base: dict[str, Any] = {
        "batch_id": batch_id,
        "call_id": spec.call_id,
        "agent_id": spec.metadata.agent_id,
        "report_created_at": report.created_at,
        "machine_verdict": report.verdict,
        "machine_score": report.score,
        "review_state": "",
        "human_edited": False,
        "verdict": report.verdict,
        "score": report.score,
    }
    findings: list[tuple[str, str, str, str, Finding]] = [
        (f"m{i}", "machine", "", "", f) for i, f in enumerate(report.findings)
    ]
    if reviewed:
        view = human_view(report, load_review(jobs, batch_id, spec.call_id))
        base.update(
            review_state=view.state.value, human_edited=view.human_edited, verdict=view.verdict, score=view.score
        )
        findings = [(r.id, r.origin, r.decision.value, r.reason, r.finding) for r in view.findings]
    if not findings:
        return [{**base, **dict.fromkeys(EXPORT_COLUMNS[10:], "")}]
    return [
        {
            **base,
            "finding_id": finding_id,
            "origin": origin,
            "decision": decision,
            "rule_id": f.rule_id,
            "name": f.name,
            "severity": f.severity.value,
            "category": f.category,
            "source": f.source,
            "confidence": f.confidence,
            "start": f.start,
            "end": f.end,
            "segment_ids": list(f.segment_ids),
            "evidence": redact_text(f.evidence),
            "rationale": redact_text(f.rationale),
            "decision_reason": redact_text(reason),
        }
        for finding_id, origin, decision, reason, f in findings
    ]


def rows_to_csv(rows: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    """CSV in chunks (header first, UTF-8 with a BOM); list cells are joined with ``;``."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=EXPORT_COLUMNS, extrasaction="ignore", lineterminator="\n")
    buffer.write("\ufeff")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ";".join(v) if isinstance(v, list) else ("" if v is None else v) for k, v in row.items()})
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def rows_to_jsonl(rows: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    """One JSON object per line (UTF-8, Chinese kept as is)."""
    for row in rows:
        yield (json.dumps({k: row.get(k) for k in EXPORT_COLUMNS}, ensure_ascii=False) + "\n").encode()


# ---- coverage --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Coverage:
    day: str
    utc_offset: str
    received: int
    inspected: int
    rejected_at_intake: int
    batches: int

    @property
    def not_inspected(self) -> int:
        return self.received - self.inspected

    @property
    def coverage(self) -> float:
        """inspected / received (1.0 on a day that received nothing)."""
        return self.inspected / self.received if self.received else 1.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "not_inspected": self.not_inspected, "coverage": round(self.coverage, 6)}


def parse_utc_offset(text: str) -> timezone:
    """``+08:00`` / ``-05:30`` / ``Z`` → a fixed time zone."""
    if text in ("", "Z", "z", "+00:00"):
        return UTC
    sign = 1 if text[0] == "+" else -1 if text[0] == "-" else 0
    hours, _, minutes = text[1:].partition(":")
    if not sign or not hours.isdigit() or (minutes and not minutes.isdigit()):
        raise ValueError(f"UTC offset must look like +08:00, not {text!r}")
    delta = timedelta(hours=int(hours), minutes=int(minutes or 0))
    if delta >= timedelta(hours=24):
        raise ValueError(f"UTC offset out of range: {text!r}")
    return timezone(sign * delta)


_created: dict[tuple[int, str], datetime] = {}  # (id of the object store, batch id) → manifest created_at
_created_guard = threading.Lock()


def _batch_ids(jobs: JobStore) -> list[str]:
    """Batch ids under ``jobs/batches/`` from a delimiter listing (one entry per batch)."""
    prefix = f"{jobs.jobs}batches/"
    inner = getattr(jobs.store, "inner", jobs.store)
    client = getattr(inner, "client", None)
    if client is not None and hasattr(client, "list_objects"):
        names = (o.object_name or "" for o in client.list_objects(inner.bucket, prefix=prefix, recursive=False))
        return sorted({n.removeprefix(prefix).strip("/") for n in names if n.endswith("/")})
    suffix = "/manifest.json"  # object stores without delimiter listing (test fakes): walk the keys
    return sorted(
        k.removeprefix(prefix).removesuffix(suffix) for k in jobs.store.list_keys(prefix) if k.endswith(suffix)
    )


def _created_at(jobs: JobStore, batch_id: str) -> tuple[datetime | None, BatchManifest | None]:
    key = (id(jobs.store), batch_id)
    with _created_guard:
        if key in _created:
            return _created[key], None
    manifest = jobs.get_manifest(batch_id)
    if manifest is None:
        return None, None
    created = datetime.fromisoformat(manifest.created_at)
    with _created_guard:
        _created[key] = created
    return created, manifest


def _inspected(jobs: JobStore, manifest: BatchManifest) -> int:
    prefix = f"{jobs.reports}{manifest.batch_id}/"
    stored = {
        k.removeprefix(prefix).removesuffix(".json")
        for k in jobs.store.list_keys(prefix)
        if k.endswith(".json") and "/" not in k.removeprefix(prefix)
    }
    return sum(1 for spec in manifest.calls if spec.call_id in stored)


def coverage_for_day(jobs: JobStore, day: date | str | None = None, utc_offset: str = "+08:00") -> Coverage:
    """Calls received on ``day`` (local to ``utc_offset``; default today) and how many were inspected."""
    tz = parse_utc_offset(utc_offset)
    if day is None:
        day = datetime.now(tz).date()
    elif isinstance(day, str):
        day = date.fromisoformat(day)
    received = inspected = rejected = batches = 0
    for batch_id in _batch_ids(jobs):
        created, manifest = _created_at(jobs, batch_id)
        if created is None or created.astimezone(tz).date() != day:
            continue
        manifest = manifest or jobs.get_manifest(batch_id)
        if manifest is None:
            continue
        batches += 1
        received += manifest.total
        rejected += len(manifest.rejected)
        inspected += _inspected(jobs, manifest)
    return Coverage(day.isoformat(), utc_offset, received, inspected, rejected, batches)
