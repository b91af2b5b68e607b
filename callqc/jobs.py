"""Durable batch bookkeeping in S3: manifests, open-batch markers, per-call status, report keys.

Layout under the bucket (prefixes from settings):

    jobs/batches/{batch_id}/manifest.json       immutable once written; the batch exists from here on
    jobs/batches/{batch_id}/status/{call}.json   latest state of one call (absent = queued)
    jobs/open/{batch_id}                          marker: the dispatcher still has work in this batch
    reports/{batch_id}/{call}.json               the report
    reports/latest/{call}.json                   pointer to the newest batch that inspected the call

The manifest is written before the open marker and both before the client is answered, so an
acknowledged batch is never lost; a resubmission with the same request id repairs a missing marker.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from pydantic import BaseModel, Field

from callqc.errors import CallErrorCode
from callqc.models import CallSpec, CallState
from callqc.settings import S3Settings, Settings
from callqc.storage import ObjectNotFound, ObjectStore


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class CallStatus(BaseModel):
    call_id: str
    state: CallState = CallState.QUEUED
    error: CallErrorCode | None = None
    error_message: str = ""
    updated_at: str = Field(default_factory=utc_now)
    attempts: int = 0
    report_key: str = ""


class BatchManifest(BaseModel):
    batch_id: str
    request_id: str
    client: str
    created_at: str = Field(default_factory=utc_now)
    request_digest: str
    calls: list[CallSpec]
    rejected: list[CallStatus] = Field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.calls) + len(self.rejected)


class RequestConflict(ValueError):
    """The request id was used before for a different set of calls."""


def batch_id_for(client: str, request_id: str) -> str:
    """Deterministic: the same caller + request id always maps to the same batch."""
    return "b" + hashlib.sha256(f"{client}\x1f{request_id}".encode()).hexdigest()[:24]


class JobStore:
    """Reads and writes batch state. Safe to use from many threads."""

    def __init__(self, store: ObjectStore, settings: S3Settings, io_threads: int = 8) -> None:
        self.store = store
        self.jobs = settings.jobs_prefix
        self.reports = settings.reports_prefix
        self._pool = ThreadPoolExecutor(max_workers=io_threads, thread_name_prefix="jobstore")

    # -- keys ----------------------------------------------------------------------------
    def manifest_key(self, batch_id: str) -> str:
        return f"{self.jobs}batches/{batch_id}/manifest.json"

    def status_key(self, batch_id: str, call_id: str) -> str:
        return f"{self.jobs}batches/{batch_id}/status/{call_id}.json"

    def open_key(self, batch_id: str) -> str:
        return f"{self.jobs}open/{batch_id}"

    def report_key(self, batch_id: str, call_id: str) -> str:
        return f"{self.reports}{batch_id}/{call_id}.json"

    def latest_report_pointer(self, call_id: str) -> str:
        return f"{self.reports}latest/{call_id}.json"

    # -- batches -------------------------------------------------------------------------
    def create_batch(self, manifest: BatchManifest) -> tuple[BatchManifest, bool]:
        """Store the manifest and mark it open. Returns (stored manifest, created?)."""
        existing = self.get_manifest(manifest.batch_id)
        if existing is not None:
            if existing.request_digest != manifest.request_digest:
                raise RequestConflict(
                    f"request_id {manifest.request_id!r} was already used for a different set of calls "
                    f"(batch {existing.batch_id})"
                )
            if not self.batch_complete(existing):
                self.store.put_bytes(self.open_key(existing.batch_id), existing.batch_id.encode())
            return existing, False
        self.store.put_bytes(
            self.manifest_key(manifest.batch_id),
            manifest.model_dump_json().encode(),
            content_type="application/json",
        )
        if manifest.calls:
            self.store.put_bytes(self.open_key(manifest.batch_id), manifest.batch_id.encode())
        return manifest, True

    def get_manifest(self, batch_id: str) -> BatchManifest | None:
        try:
            return BatchManifest.model_validate_json(self.store.get_bytes(self.manifest_key(batch_id)))
        except ObjectNotFound:
            return None

    def open_batches(self) -> list[str]:
        prefix = f"{self.jobs}open/"
        return [key.removeprefix(prefix) for key in self.store.list_keys(prefix)]

    def close_batch(self, batch_id: str) -> None:
        self.store.delete(self.open_key(batch_id))

    # -- per-call status -----------------------------------------------------------------
    def get_status(self, batch_id: str, call_id: str) -> CallStatus:
        try:
            return CallStatus.model_validate_json(self.store.get_bytes(self.status_key(batch_id, call_id)))
        except ObjectNotFound:
            return CallStatus(call_id=call_id)

    def set_status(self, batch_id: str, status: CallStatus) -> None:
        status.updated_at = utc_now()
        self.store.put_bytes(
            self.status_key(batch_id, status.call_id),
            status.model_dump_json().encode(),
            content_type="application/json",
        )

    def statuses(self, manifest: BatchManifest) -> list[CallStatus]:
        """Every call of the batch in manifest order; intake rejections first."""
        stored = {
            key.rsplit("/", 1)[-1].removesuffix(".json")
            for key in self.store.list_keys(f"{self.jobs}batches/{manifest.batch_id}/status/")
        }

        def read(spec: CallSpec) -> CallStatus:
            if spec.call_id in stored:
                return self.get_status(manifest.batch_id, spec.call_id)
            return CallStatus(call_id=spec.call_id, updated_at=manifest.created_at)

        return list(manifest.rejected) + list(self._pool.map(read, manifest.calls))

    def batch_complete(self, manifest: BatchManifest) -> bool:
        return all(s.state.terminal for s in self.statuses(manifest))

    # -- reports -------------------------------------------------------------------------
    def put_report(self, batch_id: str, call_id: str, report_json: bytes) -> str:
        key = self.report_key(batch_id, call_id)
        self.store.put_bytes(key, report_json, content_type="application/json")
        self.store.put_json(self.latest_report_pointer(call_id), {"batch_id": batch_id, "key": key})
        return key

    def latest_batch_of(self, call_id: str) -> str:
        """The newest batch that inspected ``call_id`` ('' if none)."""
        try:
            return str(self.store.get_json(self.latest_report_pointer(call_id))["batch_id"])
        except ObjectNotFound:
            return ""

    def get_report(self, call_id: str, batch_id: str = "") -> bytes:
        """The stored report JSON; raises ObjectNotFound."""
        if not batch_id:
            pointer = self.store.get_json(self.latest_report_pointer(call_id))
            batch_id = pointer["batch_id"]
        return self.store.get_bytes(self.report_key(batch_id, call_id))


def job_store_from_settings(settings: Settings, io_threads: int = 8) -> JobStore:
    """The job store on the (encrypted) bucket of ``settings``."""
    from callqc.storage import open_store

    return JobStore(open_store(settings), settings.s3, io_threads)
