"""The CallQC gRPC service. Accepting work only touches S3: it never waits on the compute cluster."""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import quote

import grpc
from pydantic import ValidationError

from callqc import telemetry
from callqc.errors import CallErrorCode, CallProcessingError
from callqc.gateway.backlog import BacklogMonitor
from callqc.gateway.convert import (
    call_spec_from_pb,
    counts_of,
    report_from_json,
    status_to_pb,
    valid_batch_id,
    valid_call_id,
)
from callqc.gateway.known_audio import KnownAudio
from callqc.gateway.security import GatewaySecurity
from callqc.jobs import BatchManifest, CallStatus, JobStore, RequestConflict, batch_id_for
from callqc.models import CallSpec, CallState
from callqc.security.audit import Outcome
from callqc.security.identity import current_identity_or_none
from callqc.security.login import LoginFailed
from callqc.settings import Settings
from callqc.storage import ObjectNotFound, ObjectStore, read_maybe_plaintext
from callqc.v1 import callqc_pb2 as pb
from callqc.v1 import callqc_pb2_grpc as pb_grpc

T = TypeVar("T")
REQUEST_ID_MAX = 128
UPLOAD_CHUNK_MAX = 1024 * 1024


def caller_subject() -> str:
    """The authenticated caller (set by the auth interceptor)."""
    identity = current_identity_or_none()
    if identity is None:  # the interceptor admits no unauthenticated call to these RPCs
        raise PermissionError("no authenticated caller")
    return identity.subject


class CallQCServicer(pb_grpc.CallQCServicer):
    def __init__(self, settings: Settings, store: ObjectStore, security: GatewaySecurity) -> None:
        self.settings = settings
        self.store = store
        self.security = security
        self.jobs = JobStore(store, settings.s3, settings.gateway.io_threads)
        self._pool = ThreadPoolExecutor(settings.gateway.io_threads, thread_name_prefix="gateway-io")
        self._submit_locks: dict[str, asyncio.Lock] = {}
        self.backlog = BacklogMonitor(
            self.jobs, settings.gateway.max_backlog_calls, settings.gateway.backlog_refresh_seconds
        )
        self.known_audio = KnownAudio(
            f"{settings.s3.audio_prefix}uploads/",
            settings.gateway.known_audio_entries,
            settings.gateway.known_audio_ttl_seconds,
        )

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # -- SubmitBatch -----------------------------------------------------------------------
    def _validate_calls(self, request: pb.SubmitBatchRequest) -> tuple[list[CallSpec], list[CallStatus]]:
        accepted: list[CallSpec] = []
        rejected: list[CallStatus] = []
        for call in request.calls:
            try:
                accepted.append(call_spec_from_pb(call, self.settings.s3.audio_prefix))
            except ValidationError as err:
                rejected.append(
                    CallStatus(
                        call_id=call.call_id,
                        state=CallState.FAILED,
                        error=CallErrorCode.INVALID_CALL,
                        error_message=f"invalid call: {err.errors()[0]['msg']}",
                    )
                )
            except CallProcessingError as err:
                rejected.append(
                    CallStatus(call_id=call.call_id, state=CallState.FAILED, error=err.code, error_message=err.message)
                )
        return accepted, rejected

    def _audio_size(self, key: str) -> int | None:
        """The object's size from S3 (None when there is none), remembered when the key is immutable."""
        info = self.store.stat(key)
        if info is None:
            return None
        self.known_audio.remember(key, info.size)
        return info.size

    async def _audio_problems(self, specs: list[CallSpec]) -> list[CallStatus]:
        """Intake check of the audio keys: one HEAD per distinct key the gateway does not already know."""
        sizes = {spec.audio_key: self.known_audio.size_of(spec.audio_key) for spec in specs}
        unknown = [key for key, size in sizes.items() if size is None]
        found = await asyncio.gather(*(self._io(self._audio_size, key) for key in unknown))
        sizes.update(zip(unknown, found, strict=True))
        cap = self.settings.audio.max_bytes
        problems: list[CallStatus] = []
        for spec in specs:
            size = sizes[spec.audio_key]
            if size is None:
                code, message = CallErrorCode.AUDIO_NOT_FOUND, f"no object {spec.audio_key!r} in the audio bucket"
            elif size > cap:
                code, message = CallErrorCode.AUDIO_TOO_LARGE, f"audio is {size} bytes; the cap is {cap}"
            else:
                continue
            problems.append(CallStatus(call_id=spec.call_id, state=CallState.FAILED, error=code, error_message=message))
        return problems

    async def SubmitBatch(self, request: pb.SubmitBatchRequest, context: grpc.aio.ServicerContext):
        if not request.request_id or len(request.request_id) > REQUEST_ID_MAX:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"request_id must be 1..{REQUEST_ID_MAX} chars")
        if not request.calls:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a batch needs at least one call")
        if len(request.calls) > self.settings.gateway.max_calls_per_batch:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{len(request.calls)} calls; at most {self.settings.gateway.max_calls_per_batch} per batch",
            )
        seen: set[str] = set()
        duplicates = sorted({c.call_id for c in request.calls if c.call_id in seen or seen.add(c.call_id)})
        if duplicates:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"call_id repeated within the batch: {', '.join(duplicates[:10])}"
            )
        client = caller_subject()
        batch_id = batch_id_for(client, request.request_id)
        lock = self._submit_locks.setdefault(batch_id, asyncio.Lock())
        try:
            stored, created = await self._store_batch(lock, batch_id, client, request, context)
        finally:
            if not lock.locked():
                self._submit_locks.pop(batch_id, None)
        if created:
            telemetry.CALLS_ACCEPTED.inc(len(stored.calls))
            await self.security.record(
                "batch.submit", f"batch/{stored.batch_id}", calls=stored.total, request_id=request.request_id
            )
        counts = pb.BatchCounts(total=stored.total, queued=len(stored.calls), failed=len(stored.rejected))
        return pb.SubmitBatchResponse(
            batch_id=stored.batch_id,
            created=created,
            counts=counts,
            rejected=[status_to_pb(s) for s in stored.rejected],
        )

    async def _store_batch(
        self, lock: asyncio.Lock, batch_id: str, client: str, request: pb.SubmitBatchRequest, context
    ) -> tuple[BatchManifest, bool]:
        async with lock:
            existing = await self._io(self.jobs.get_manifest, batch_id)
            if existing is not None:
                manifest = existing.model_copy(update={"request_digest": request_digest_of(request)})
                return await self._create_batch(manifest, context)
            admitted, reason = self.backlog.admit(len(request.calls))
            if not admitted:
                context.set_trailing_metadata((("retry-after-ms", str(int(self.backlog.refresh_seconds * 1000))),))
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, reason)
            stored: BatchManifest | None = None
            created = False
            try:
                stored, created = await self._create_batch(await self._new_manifest(batch_id, client, request), context)
                return stored, created
            finally:
                self.backlog.settle(len(request.calls), len(stored.calls) if stored is not None and created else 0)

    async def _new_manifest(self, batch_id: str, client: str, request: pb.SubmitBatchRequest) -> BatchManifest:
        """The manifest of a new batch: calls that pass the checks are queued, the rest rejected with a status."""
        accepted, rejected = self._validate_calls(request)
        if self.settings.gateway.check_audio_on_submit:
            rejected += await self._audio_problems(accepted)
        bad = {status.call_id for status in rejected}
        accepted = [
            spec.model_copy(update={"trace_context": telemetry.start_call_trace(spec.call_id, batch_id)})
            for spec in accepted
            if spec.call_id not in bad
        ]
        return BatchManifest(
            batch_id=batch_id,
            request_id=request.request_id,
            client=client,
            request_digest=request_digest_of(request),
            calls=accepted,
            rejected=rejected,
        )

    async def _create_batch(self, manifest: BatchManifest, context) -> tuple[BatchManifest, bool]:
        try:
            return await self._io(self.jobs.create_batch, manifest)
        except RequestConflict as err:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, str(err))
            raise  # unreachable: abort raises

    # -- UploadAudio -----------------------------------------------------------------------
    async def UploadAudio(self, request_iterator: AsyncIterator[pb.UploadAudioRequest], context):
        cap = self.settings.gateway.upload_max_bytes
        header: pb.UploadHeader | None = None
        digest = hashlib.sha256()
        size = 0
        with tempfile.SpooledTemporaryFile(max_size=self.settings.gateway.upload_spool_bytes) as spool:
            async for message in request_iterator:
                part = message.WhichOneof("part")
                if part == "header":
                    if header is not None or size:
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the header must come once, first")
                    header = message.header
                    continue
                if part != "chunk":
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "empty upload message")
                if len(message.chunk) > UPLOAD_CHUNK_MAX:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"chunks must be ≤ {UPLOAD_CHUNK_MAX} bytes")
                size += len(message.chunk)
                if size > cap:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"upload exceeds the {cap}-byte cap")
                digest.update(message.chunk)
                spool.write(message.chunk)
            if size == 0:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "upload carried no audio bytes")
            sha256 = digest.hexdigest()
            if header is not None and header.sha256 and header.sha256.lower() != sha256:
                await context.abort(
                    grpc.StatusCode.DATA_LOSS, f"sha256 of the received bytes is {sha256}, header said {header.sha256}"
                )
            if header is not None and header.size and header.size != size:
                await context.abort(grpc.StatusCode.DATA_LOSS, f"received {size} bytes, header said {header.size}")
            key = f"{self.settings.s3.audio_prefix}uploads/{sha256}"
            if not await self._io(self.store.exists, key):
                spool.seek(0)
                # S3 user metadata must be US-ASCII: percent-encode the (often Chinese) file name
                meta = {"sha256": sha256, "filename": quote((header.filename if header else "")[:200])}
                await self._io(self.store.put_stream, key, spool, size, meta)
            self.known_audio.remember(key, size)
        await self.security.record("audio.upload", key, size=size)
        return pb.UploadAudioResponse(audio_key=key, sha256=sha256, size=size)

    # -- reads -----------------------------------------------------------------------------
    async def _manifest_or_abort(self, batch_id: str, context, method: str) -> BatchManifest:
        if batch_id and not valid_batch_id(batch_id):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed batch_id {batch_id[:80]!r}")
        if not batch_id:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no batch ''")
        manifest = await self._io(self.jobs.get_manifest, batch_id)
        if manifest is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no batch {batch_id!r}")
        allowed, reason = self.security.may_access_batch(method, batch_id, manifest.client)
        if not allowed:
            await self.security.record("batch.read", f"batch/{batch_id}", Outcome.DENIED, method=method)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, reason)
        return manifest

    async def GetBatch(self, request: pb.GetBatchRequest, context):
        manifest = await self._manifest_or_abort(request.batch_id, context, "/callqc.v1.CallQC/GetBatch")
        statuses = await self._io(self.jobs.statuses, manifest)
        return pb.GetBatchResponse(
            batch_id=manifest.batch_id,
            request_id=manifest.request_id,
            created_at=manifest.created_at,
            counts=counts_of(statuses),
            calls=[status_to_pb(s) for s in statuses],
        )

    async def _call_batch_or_abort(self, call_id: str, batch_id: str, context, method: str) -> BatchManifest:
        """The batch that inspected ``call_id`` (the given one, else the latest), access-checked."""
        if not valid_call_id(call_id):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "call_id must match [A-Za-z0-9._:-]{1,128}")
        if batch_id and not valid_batch_id(batch_id):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed batch_id {batch_id[:80]!r}")
        resolved = batch_id or await self._io(self.jobs.latest_batch_of, call_id)
        if not resolved:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no inspected call {call_id!r}")
        return await self._manifest_or_abort(resolved, context, method)

    async def GetReport(self, request: pb.GetReportRequest, context):
        manifest = await self._call_batch_or_abort(
            request.call_id, request.batch_id, context, "/callqc.v1.CallQC/GetReport"
        )
        batch_id = manifest.batch_id
        where = f" in batch {request.batch_id!r}" if request.batch_id else ""
        try:
            data = await self._io(self.jobs.get_report, request.call_id, batch_id)
        except (ObjectNotFound, KeyError):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no report for call {request.call_id!r}{where}")
        await self.security.record("report.read", f"report/{batch_id}/{request.call_id}")
        return pb.GetReportResponse(report=report_from_json(data), report_json=data.decode())

    async def GetAudio(self, request: pb.GetAudioRequest, context):
        manifest = await self._call_batch_or_abort(
            request.call_id, request.batch_id, context, "/callqc.v1.CallQC/GetAudio"
        )
        batch_id = manifest.batch_id
        spec = next((c for c in manifest.calls if c.call_id == request.call_id), None)
        if spec is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"call {request.call_id!r} is not in batch {batch_id}")
        try:
            data = await self._io(read_maybe_plaintext, self.store, spec.audio_key)
        except ObjectNotFound:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"the audio of {request.call_id!r} is gone")
        await self.security.record("audio.read", f"audio/{batch_id}/{request.call_id}", key=spec.audio_key)
        digest = hashlib.sha256(data).hexdigest()
        for offset in range(0, len(data), UPLOAD_CHUNK_MAX):
            first = offset == 0
            yield pb.AudioChunk(
                data=data[offset : offset + UPLOAD_CHUNK_MAX],
                sha256=digest if first else "",
                size=len(data) if first else 0,
            )

    async def Login(self, request: pb.LoginRequest, context):
        try:
            result = await self._io(self.security.login.login, request.username, request.password, request.totp_code)
        except LoginFailed as err:
            await self.security.record_login(request.username, Outcome.FAILURE, reason=err.reason.value)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(err))
        await self.security.record_login(request.username, Outcome.SUCCESS)
        ident = result.identity
        expires = int(ident.expires_at.timestamp() - time.time()) if ident.expires_at else 0
        return pb.LoginResponse(token=result.token, expires_in_seconds=expires, roles=sorted(ident.roles))

    async def WatchBatch(self, request: pb.WatchBatchRequest, context):
        manifest = await self._manifest_or_abort(request.batch_id, context, "/callqc.v1.CallQC/WatchBatch")
        last: dict[str, tuple[str, int]] = {}
        while True:
            statuses = await self._io(self.jobs.statuses, manifest)
            counts = counts_of(statuses)
            complete = all(s.state.terminal for s in statuses)
            changed = [s for s in statuses if last.get(s.call_id) != (s.state.value, s.attempts)]
            for status in changed:
                last[status.call_id] = (status.state.value, status.attempts)
                yield pb.WatchBatchResponse(call=status_to_pb(status), counts=counts)
            if complete:
                yield pb.WatchBatchResponse(counts=counts, complete=True)
                return
            await asyncio.sleep(self.settings.gateway.watch_poll_seconds)


def request_digest_of(request: pb.SubmitBatchRequest) -> str:
    """Digest of the submission as sent (not as validated) — what a repeated request id must match."""
    return hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()
