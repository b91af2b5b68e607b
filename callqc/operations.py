"""Operator actions on stored work, computed from S3 alone (no Ray): retry failed calls, queue depth, coverage.

* ``retry_failed`` re-queues a finished batch's FAILED calls that a retry can fix (``PROCESSING_FAILED``)
  and re-opens the batch, so the dispatcher picks them up again. Audio / input failures (``AUDIO_*``,
  ``CHANNEL_MISMATCH``, ...) are re-queued only with ``include_all`` (e.g. after the audio was re-uploaded).
* ``queue_depth`` counts open batches and their calls not yet finished.
* ``daily_coverage`` is the regulator's number: calls received on a day (by the bank's time zone) and how
  many of them have a report, plus reports written in the last minutes (calls/min).

Finding a day's batches lists the batch prefixes and reads each manifest's timestamp, so its cost grows with
the number of batches kept under ``jobs/`` (bounded by the bucket's lifecycle rules), not with calls.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

from callqc.errors import CallErrorCode
from callqc.jobs import BatchManifest, CallStatus, JobStore
from callqc.models import CallState

RETRYABLE = frozenset({CallErrorCode.PROCESSING_FAILED})
"""Failures a plain retry can fix: the pipeline broke, not the input."""


class BatchNotFound(LookupError):
    """No manifest is stored for this batch id."""


class BatchStillOpen(RuntimeError):
    """The dispatcher still works on the batch; retry once it has finished."""


@dataclass(frozen=True)
class RetryResult:
    """What ``retry_failed`` did (or would do, on a dry run)."""

    batch_id: str
    requeued: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # call id -> why it stays failed
    dry_run: bool = False


@dataclass(frozen=True)
class QueueDepth:
    """Work accepted but not finished."""

    open_batches: int
    queued_calls: int
    running_calls: int

    @property
    def pending_calls(self) -> int:
        return self.queued_calls + self.running_calls


@dataclass(frozen=True)
class DailyCoverage:
    """Calls received on ``day`` (bank time zone) versus calls of those batches that have a report."""

    day: date
    batches: int
    received: int  # every call submitted that day, intake rejections included
    inspected: int  # calls with a stored report
    rejected: int  # refused at intake (never inspectable)
    calls_per_minute: float  # reports written in the last ``window`` minutes, per minute

    @property
    def ratio(self) -> float | None:
        """inspected / received; None when nothing was received."""
        return self.inspected / self.received if self.received else None


# -- S3 access with timestamps (ObjectStore exposes keys only) ------------------------------------------------
def _raw(store: Any) -> Any:
    """The plain ObjectStore under an encrypting wrapper (listing and timestamps are not encrypted)."""
    return getattr(store, "inner", store)


def _list_prefixes(store: Any, prefix: str) -> list[str]:
    raw = _raw(store)
    return sorted(
        obj.object_name
        for obj in raw.client.list_objects(raw.bucket, prefix=prefix, recursive=False)
        if obj.object_name and obj.is_dir
    )


def _list_with_times(store: Any, prefix: str) -> list[tuple[str, datetime]]:
    raw = _raw(store)
    return [
        (obj.object_name, obj.last_modified or datetime.fromtimestamp(0, UTC))
        for obj in raw.client.list_objects(raw.bucket, prefix=prefix, recursive=True)
        if obj.object_name and not obj.is_dir
    ]


def _last_modified(store: Any, key: str) -> datetime | None:
    raw = _raw(store)
    try:
        return raw.client.stat_object(raw.bucket, key).last_modified
    except Exception:  # gone (or unreadable): the batch does not count
        return None


# -- retry -----------------------------------------------------------------------------------------------------
def retry_failed(jobs: JobStore, batch_id: str, *, include_all: bool = False, dry_run: bool = False) -> RetryResult:
    """Re-queue the batch's FAILED calls (attempts reset) and re-open it. Intake rejections are never retried.

    Refuses a batch that is still open: the dispatcher caches which calls it has finished, so a call
    re-queued under it would not be picked up before it closes the batch.
    """
    manifest = jobs.get_manifest(batch_id)
    if manifest is None:
        raise BatchNotFound(f"no batch {batch_id!r} in the bucket")
    if batch_id in jobs.open_batches():
        raise BatchStillOpen(f"batch {batch_id} is still being processed; retry after it completes")
    result = RetryResult(batch_id=batch_id, dry_run=dry_run)
    for status in manifest.rejected:
        result.skipped[status.call_id] = f"rejected at intake ({status.error}): resubmit the call instead"
    call_ids = {spec.call_id for spec in manifest.calls}
    for status in jobs.statuses(manifest):
        if status.call_id not in call_ids or status.state != CallState.FAILED:
            continue
        if not include_all and status.error not in RETRYABLE:
            result.skipped[status.call_id] = f"{status.error}: input problem, not retried without --all"
            continue
        result.requeued.append(status.call_id)
        if not dry_run:
            jobs.set_status(batch_id, _requeued(status))
    if result.requeued and not dry_run:
        jobs.store.put_bytes(jobs.open_key(batch_id), batch_id.encode())
    return result


def _requeued(status: CallStatus) -> CallStatus:
    previous = f"{status.error}: {status.error_message}" if status.error else status.error_message
    return status.model_copy(
        update={
            "state": CallState.QUEUED,
            "error": None,
            "error_message": f"re-queued by an operator; previous failure: {previous}"[:2000],
            "attempts": 0,
            "report_key": "",
        }
    )


# -- queue depth -----------------------------------------------------------------------------------------------
def queue_depth(jobs: JobStore) -> QueueDepth:
    """Open batches and their unfinished calls (reads the status objects of open batches only)."""
    queued = running = 0
    open_ids = jobs.open_batches()
    for batch_id in open_ids:
        manifest = jobs.get_manifest(batch_id)
        if manifest is None:
            continue
        for status in jobs.statuses(manifest):
            if status.state == CallState.QUEUED:
                queued += 1
            elif status.state == CallState.RUNNING:
                running += 1
    return QueueDepth(open_batches=len(open_ids), queued_calls=queued, running_calls=running)


# -- coverage --------------------------------------------------------------------------------------------------
def day_bounds(day: date, tz: tzinfo) -> tuple[datetime, datetime]:
    """[start, end) of ``day`` in ``tz``, as aware UTC datetimes."""
    start = datetime.combine(day, time.min, tzinfo=tz)
    return start.astimezone(UTC), (start + timedelta(days=1)).astimezone(UTC)


def _created(manifest: BatchManifest) -> datetime:
    created = datetime.fromisoformat(manifest.created_at)
    return created if created.tzinfo else created.replace(tzinfo=UTC)


def batches_of_day(jobs: JobStore, day: date, tz: tzinfo, io_threads: int = 8) -> list[BatchManifest]:
    """Manifests created on ``day`` (bank time zone)."""
    start, end = day_bounds(day, tz)
    slack = timedelta(hours=1)  # S3 timestamps vs the manifest's own clock
    batch_prefixes = _list_prefixes(jobs.store, f"{jobs.jobs}batches/")
    keys = [f"{prefix}manifest.json" for prefix in batch_prefixes]
    with ThreadPoolExecutor(max_workers=io_threads) as pool:
        stamps = list(pool.map(lambda key: _last_modified(jobs.store, key), keys))
        candidates = [
            prefix.rstrip("/").rsplit("/", 1)[-1]
            for prefix, stamp in zip(batch_prefixes, stamps, strict=True)
            if stamp is not None and start - slack <= stamp < end + slack
        ]
        manifests = [m for m in pool.map(jobs.get_manifest, candidates) if m is not None]
    return [m for m in manifests if start <= _created(m) < end]


def _reports(jobs: JobStore, batch_ids: Iterable[str], io_threads: int = 8) -> dict[str, list[datetime]]:
    """Report write times per batch."""
    ids = list(batch_ids)
    with ThreadPoolExecutor(max_workers=io_threads) as pool:
        listed = pool.map(lambda b: _list_with_times(jobs.store, f"{jobs.reports}{b}/"), ids)
        return {b: [stamp for _key, stamp in items] for b, items in zip(ids, listed, strict=True)}


def daily_coverage(
    jobs: JobStore,
    day: date,
    tz: tzinfo,
    *,
    now: datetime | None = None,
    window_minutes: float = 10.0,
) -> DailyCoverage:
    """Coverage of ``day`` and the recent report rate (over that day's and all open batches)."""
    now = now or datetime.now(UTC)
    manifests = batches_of_day(jobs, day, tz)
    todays = {m.batch_id for m in manifests}
    reports = _reports(jobs, todays | set(jobs.open_batches()))
    since = now - timedelta(minutes=window_minutes)
    recent = sum(1 for stamps in reports.values() for stamp in stamps if since <= stamp <= now)
    return DailyCoverage(
        day=day,
        batches=len(manifests),
        received=sum(m.total for m in manifests),
        inspected=sum(len(reports.get(m.batch_id, [])) for m in manifests),
        rejected=sum(len(m.rejected) for m in manifests),
        calls_per_minute=recent / window_minutes if window_minutes > 0 else 0.0,
    )
