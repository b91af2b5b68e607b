"""The Review gRPC service: review workflow, reviewer assignment, raw transcripts, BI exports, coverage.

Thin: the domain lives in ``callqc.review`` (workflow, assignments), ``callqc.report`` (raw transcript),
``callqc.exports`` (CSV / JSONL, coverage). This module checks access and audits every read and change.

Access: the interceptor has already checked the permission table (method × role). Per batch, a reviewer
is *assigned* when the batch is in their token (``batches`` claim, set at login from the user record) or
in the batch's live assignment record (``AssignReviewer``), so a new assignment works without a new
login. Every call, allowed or denied, leaves an audit record; reasons and transcript text never go into
audit details (they are personal data), only ids, kinds and counts.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format
from pydantic import ValidationError

from callqc.exports import coverage_for_day, export_rows, rows_to_csv, rows_to_jsonl
from callqc.gateway.convert import report_from_json, valid_batch_id, valid_call_id
from callqc.gateway.security import GatewaySecurity
from callqc.jobs import BatchManifest, JobStore
from callqc.models import Finding
from callqc.report import Report, load_raw_transcript
from callqc.review import (
    ActionKind,
    ReviewAction,
    ReviewConflict,
    ReviewError,
    ReviewForbidden,
    ReviewRecord,
    apply_action,
    assign_reviewer,
    assignments_of,
    human_view,
    load_review,
    reviewers_of,
)
from callqc.security.audit import Outcome
from callqc.security.identity import Identity, current_identity
from callqc.security.login import UserDirectory, validate_username
from callqc.security.roles import AccessDenied, Role, check_batch_access
from callqc.settings import Settings
from callqc.storage import ObjectNotFound, ObjectStore
from callqc.v1 import callqc_pb2 as pb
from callqc.v1 import review_pb2 as rpb
from callqc.v1 import review_pb2_grpc as rpb_grpc

T = TypeVar("T")
SERVICE = "/callqc.v1.Review/"
CHUNK = 1024 * 1024
_KIND_FROM_PB = {
    rpb.REVIEW_ACTION_KIND_CONFIRM: ActionKind.CONFIRM,
    rpb.REVIEW_ACTION_KIND_REJECT: ActionKind.REJECT,
    rpb.REVIEW_ACTION_KIND_ADD: ActionKind.ADD,
    rpb.REVIEW_ACTION_KIND_COMPLETE: ActionKind.COMPLETE,
}
_KIND_TO_PB = {kind: getattr(rpb, f"REVIEW_ACTION_KIND_{kind.name}") for kind in ActionKind}
_STATE_TO_PB = {
    "draft": rpb.REVIEW_STATE_DRAFT,
    "reviewed": rpb.REVIEW_STATE_REVIEWED,
    "appealed": rpb.REVIEW_STATE_APPEALED,
    "final": rpb.REVIEW_STATE_FINAL,
}
_DECISION_TO_PB = {
    "pending": rpb.FINDING_DECISION_PENDING,
    "confirmed": rpb.FINDING_DECISION_CONFIRMED,
    "rejected": rpb.FINDING_DECISION_REJECTED,
}


def finding_to_pb(finding: Finding) -> pb.Finding:
    return json_format.ParseDict(finding.model_dump(mode="json"), pb.Finding())


def finding_from_pb(message: pb.Finding) -> Finding:
    return Finding.model_validate(json_format.MessageToDict(message, preserving_proto_field_name=True))


def review_item(report_data: bytes, report: Report, record: ReviewRecord) -> rpb.ReviewItem:
    """The wire form of a report with its review."""
    view = human_view(report, record)
    item = rpb.ReviewItem(
        report=report_from_json(report_data),
        state=_STATE_TO_PB[view.state.value],
        revision=view.revision,
        machine_verdict=view.machine_verdict,
        score=view.score,
        verdict=view.verdict,
        reasons=view.reasons,
        human_edited=view.human_edited,
        report_changed=view.report_changed,
        reviewers=record.reviewers,
    )
    if view.machine_score is not None:
        item.machine_score = view.machine_score
    for f in view.findings:
        item.findings.append(
            rpb.ReviewedFinding(
                id=f.id,
                origin=f.origin,
                decision=_DECISION_TO_PB[f.decision.value],
                reason=f.reason,
                finding=finding_to_pb(f.finding),
            )
        )
    for e in record.history:
        event = rpb.ReviewEvent(
            revision=e.revision,
            at=e.at,
            actor=e.actor,
            roles=e.roles,
            kind=_KIND_TO_PB[e.kind],
            finding_id=e.finding_id,
            reason=e.reason,
            from_state=_STATE_TO_PB[e.from_state.value],
            to_state=_STATE_TO_PB[e.to_state.value],
        )
        if e.finding is not None:
            event.finding.CopyFrom(finding_to_pb(e.finding))
        item.history.append(event)
    return item


class ReviewServicer(rpb_grpc.ReviewServicer):
    def __init__(self, settings: Settings, store: ObjectStore, security: GatewaySecurity) -> None:
        self.settings = settings
        self.store = store
        self.security = security
        self.jobs = JobStore(store, settings.s3, settings.gateway.io_threads)
        self.users = UserDirectory(store, settings.security.login.users_prefix)
        self._pool = ThreadPoolExecutor(settings.gateway.io_threads, thread_name_prefix="review-io")

    async def _io(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    # -- access ------------------------------------------------------------------------------
    def _with_live_assignment(self, ident: Identity, batch_id: str) -> Identity:
        if Role.REVIEWER not in ident.roles or batch_id in ident.batches:
            return ident
        if ident.subject.lower() in reviewers_of(self.jobs, batch_id).reviewers:
            return dataclasses.replace(ident, batches=ident.batches | {batch_id})
        return ident

    async def _batch(self, method: str, batch_id: str, context) -> BatchManifest:
        """The manifest of ``batch_id`` if the caller may use ``method`` on it; else abort (denials audited)."""
        if not valid_batch_id(batch_id):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed batch_id {batch_id[:80]!r}")
        manifest = await self._io(self.jobs.get_manifest, batch_id)
        if manifest is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no batch {batch_id!r}")
        ident = await self._io(self._with_live_assignment, current_identity(), batch_id)
        try:
            check_batch_access(self.security.permissions, SERVICE + method, ident, batch_id, manifest.client)
        except AccessDenied as err:
            await self.security.record("batch.read", f"batch/{batch_id}", Outcome.DENIED, method=SERVICE + method)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(err))
        return manifest

    async def _call(self, method: str, call_id: str, batch_id: str, context) -> tuple[BatchManifest, bytes, Report]:
        """The access-checked batch and the stored (redacted) report of ``call_id``."""
        if not valid_call_id(call_id):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "call_id must match [A-Za-z0-9._:-]{1,128}")
        resolved = batch_id or await self._io(self.jobs.latest_batch_of, call_id)
        if not resolved:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no inspected call {call_id!r}")
        manifest = await self._batch(method, resolved, context)
        try:
            data = await self._io(self.jobs.get_report, call_id, manifest.batch_id)
        except (ObjectNotFound, KeyError):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no report for call {call_id!r} in {manifest.batch_id}")
        return manifest, data, Report.model_validate_json(data)

    # -- review ------------------------------------------------------------------------------
    async def GetReviewItem(self, request: rpb.GetReviewItemRequest, context):
        manifest, data, report = await self._call("GetReviewItem", request.call_id, request.batch_id, context)
        record = await self._io(load_review, self.jobs, manifest.batch_id, request.call_id)
        await self.security.record(
            "review.read", f"review/{manifest.batch_id}/{request.call_id}", revision=record.revision
        )
        return rpb.GetReviewItemResponse(item=review_item(data, report, record))

    async def _act(self, method: str, call_id: str, batch_id: str, revision: int, action: ReviewAction, context):
        manifest, data, report = await self._call(method, call_id, batch_id, context)
        ident = current_identity()
        resource = f"review/{manifest.batch_id}/{call_id}"
        audit = {"kind": action.kind.value, "finding_id": action.finding_id, "expected_revision": revision}
        try:
            record = await self._io(
                apply_action,
                self.jobs,
                manifest.batch_id,
                call_id,
                action,
                actor=ident.subject,
                roles=[r.value for r in ident.roles],
                expected_revision=revision,
                report=report,
            )
        except ReviewError as err:
            outcome = Outcome.DENIED if isinstance(err, ReviewForbidden) else Outcome.FAILURE
            await self.security.record(f"review.{action.kind.value}", resource, outcome, **audit, error=str(err)[:300])
            code = (
                grpc.StatusCode.PERMISSION_DENIED
                if isinstance(err, ReviewForbidden)
                else grpc.StatusCode.ABORTED
                if isinstance(err, ReviewConflict)
                else grpc.StatusCode.FAILED_PRECONDITION
            )
            await context.abort(code, str(err))
        await self.security.record(f"review.{action.kind.value}", resource, **audit, revision=record.revision)
        return review_item(data, report, record)

    async def SubmitReview(self, request: rpb.SubmitReviewRequest, context):
        kind = _KIND_FROM_PB.get(request.kind)
        if kind is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "kind must be CONFIRM, REJECT, ADD or COMPLETE")
        finding = None
        if kind == ActionKind.ADD:
            try:
                finding = finding_from_pb(request.finding)
            except ValidationError as err:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid finding: {err.errors()[0]['msg']}")
        action = ReviewAction(kind=kind, finding_id=request.finding_id, reason=request.reason, finding=finding)
        item = await self._act(
            "SubmitReview", request.call_id, request.batch_id, request.expected_revision, action, context
        )
        return rpb.SubmitReviewResponse(item=item)

    async def AppealReview(self, request: rpb.AppealReviewRequest, context):
        action = ReviewAction(kind=ActionKind.APPEAL, reason=request.reason)
        item = await self._act(
            "AppealReview", request.call_id, request.batch_id, request.expected_revision, action, context
        )
        return rpb.AppealReviewResponse(item=item)

    async def FinalizeReview(self, request: rpb.FinalizeReviewRequest, context):
        action = ReviewAction(kind=ActionKind.FINALIZE, reason=request.reason)
        item = await self._act(
            "FinalizeReview", request.call_id, request.batch_id, request.expected_revision, action, context
        )
        return rpb.FinalizeReviewResponse(item=item)

    async def GetRawTranscript(self, request: rpb.GetRawTranscriptRequest, context):
        manifest, _data, _report = await self._call("GetRawTranscript", request.call_id, request.batch_id, context)
        resource = f"transcript/{manifest.batch_id}/{request.call_id}"
        try:
            raw = await self._io(load_raw_transcript, self.jobs, manifest.batch_id, request.call_id)
        except (ObjectNotFound, KeyError):
            await self.security.record("transcript.raw.read", resource, Outcome.FAILURE, error="not kept")
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no raw transcript kept for {request.call_id!r}")
        await self.security.record("transcript.raw.read", resource)
        response = rpb.GetRawTranscriptResponse(findings=[finding_to_pb(f) for f in raw.findings])
        for seg in raw.transcript:
            response.transcript.append(json_format.ParseDict(seg.model_dump(mode="json"), pb.Segment()))
        return response

    # -- assignments -------------------------------------------------------------------------
    async def AssignReviewer(self, request: rpb.AssignReviewerRequest, context):
        manifest = await self._batch("AssignReviewer", request.batch_id, context)
        try:
            name = validate_username(request.reviewer)
        except ValueError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        user = await self._io(self.users.get, name)
        if user is not None and Role.REVIEWER not in user.roles and Role.QC_MANAGER not in user.roles:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{name} is not a reviewer")
        by = current_identity().subject
        assignment = await self._io(assign_reviewer, self.jobs, manifest.batch_id, name, by=by, remove=request.remove)
        if user is not None:  # the next login token carries the batch (CallQC GetReport / GetAudio)
            await self._io(self._update_user_batches, name, manifest.batch_id, request.remove)
        await self.security.record("review.assign", f"batch/{manifest.batch_id}", reviewer=name, remove=request.remove)
        return rpb.AssignReviewerResponse(batch_id=manifest.batch_id, reviewers=assignment.reviewers)

    def _update_user_batches(self, name: str, batch_id: str, remove: bool) -> None:
        user = self.users.get(name)
        if user is None:
            return
        batches = [b for b in user.batches if b != batch_id] + ([] if remove else [batch_id])
        self.users.save(user.model_copy(update={"batches": sorted(set(batches))}))

    async def ListAssignments(self, request: rpb.ListAssignmentsRequest, context):
        ident = current_identity()
        name = (request.reviewer or ident.subject).lower()
        if name != ident.subject.lower() and Role.QC_MANAGER not in ident.roles:
            await self.security.record("review.assignments", f"user/{name}", Outcome.DENIED)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "reviewers may list only their own assignments")
        try:
            batches = await self._io(assignments_of, self.jobs, validate_username(name))
        except ValueError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        if name == ident.subject.lower():
            batches = sorted(set(batches) | set(ident.batches))
        await self.security.record("review.assignments", f"user/{name}", batches=len(batches))
        return rpb.ListAssignmentsResponse(reviewer=name, batch_ids=batches)

    # -- exports and coverage ----------------------------------------------------------------
    async def ExportFindings(self, request: rpb.ExportFindingsRequest, context):
        manifest = await self._batch("ExportFindings", request.batch_id, context)
        jsonl = request.format == rpb.EXPORT_FORMAT_JSONL
        reviewed = not request.machine_only

        def build() -> tuple[bytes, int]:
            rows = list(export_rows(self.jobs, manifest, reviewed=reviewed))
            chunks = rows_to_jsonl(rows) if jsonl else rows_to_csv(rows)
            return b"".join(chunks), len(rows)

        data, rows = await self._io(build)
        fmt = "jsonl" if jsonl else "csv"
        await self.security.record(
            "export.findings", f"batch/{manifest.batch_id}", format=fmt, rows=rows, reviewed=reviewed
        )
        content_type = "application/x-ndjson" if jsonl else "text/csv; charset=utf-8"
        filename = f"findings-{manifest.batch_id}.{fmt}"
        for offset in range(0, max(len(data), 1), CHUNK):
            first = offset == 0
            yield rpb.ExportFindingsResponse(
                data=data[offset : offset + CHUNK],
                content_type=content_type if first else "",
                filename=filename if first else "",
            )

    async def GetCoverage(self, request: rpb.GetCoverageRequest, context):
        try:
            cov = await self._io(coverage_for_day, self.jobs, request.day or None, request.utc_offset or "+08:00")
        except ValueError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        await self.security.record("coverage.read", f"coverage/{cov.day}", received=cov.received)
        return rpb.GetCoverageResponse(
            day=cov.day,
            utc_offset=cov.utc_offset,
            received=cov.received,
            inspected=cov.inspected,
            not_inspected=cov.not_inspected,
            rejected_at_intake=cov.rejected_at_intake,
            batches=cov.batches,
            coverage=cov.coverage,
        )
