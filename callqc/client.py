"""A small synchronous client for the CallQC gRPC API (used by the CLI, tests and perf)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import yaml

from callqc.gateway.convert import call_spec_to_pb
from callqc.models import CallMetadata, CallSpec, ChannelLayout
from callqc.v1 import callqc_pb2 as pb
from callqc.v1 import callqc_pb2_grpc as pb_grpc
from callqc.v1 import review_pb2 as rpb
from callqc.v1 import review_pb2_grpc as rpb_grpc

CHUNK_BYTES = 512 * 1024
AUDIO_SUFFIXES = {".wav", ".mp3", ".flac", ".ogg", ".opus", ".amr", ".m4a"}


@dataclass
class LocalCall:
    """A call on local disk, ready to upload and submit."""

    path: Path
    spec: CallSpec  # audio_key filled in after upload


def load_calls(
    path: Path, language: str = "zh", layout: ChannelLayout = ChannelLayout.STEREO_AGENT_LEFT
) -> list[LocalCall]:
    """A folder of audio files (call id = file stem) or a batch YAML (see samples/batch.yaml)."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
        return [
            LocalCall(f, CallSpec(call_id=f.stem, audio_key="", channel_layout=layout, language=language))
            for f in files
        ]
    doc = yaml.safe_load(path.read_text())
    calls = []
    for entry in doc["calls"]:
        spec = CallSpec(
            call_id=entry["call_id"],
            audio_key="",
            channel_layout=ChannelLayout(entry.get("channel_layout", layout.value)),
            language=entry.get("language", language),
            metadata=CallMetadata.model_validate(entry.get("metadata", {})),
        )
        calls.append(LocalCall(path.parent / entry["file"], spec))
    return calls


@dataclass
class ClientAuth:
    """How a client proves itself: TLS trust + optional client certificate (mTLS) + optional bearer token.

    ``local=True`` uses gRPC local credentials (loopback only, for tests / development).
    """

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    token: str = ""
    local: bool = False

    def channel_credentials(self) -> grpc.ChannelCredentials:
        if self.local:
            creds = grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP)
        else:

            def read(path: Path | None) -> bytes | None:
                return path.read_bytes() if path else None

            creds = grpc.ssl_channel_credentials(read(self.ca_file), read(self.key_file), read(self.cert_file))
        if self.token:
            creds = grpc.composite_channel_credentials(creds, grpc.access_token_call_credentials(self.token))
        return creds


class CallQCClient:
    def __init__(self, target: str, auth: ClientAuth, timeout: float = 60.0) -> None:
        self.target = target
        self.channel = grpc.secure_channel(target, auth.channel_credentials())
        self.stub = pb_grpc.CallQCStub(self.channel)
        self.review = rpb_grpc.ReviewStub(self.channel)
        self.timeout = timeout

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> CallQCClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def upload_bytes(self, data: bytes, filename: str = "") -> pb.UploadAudioResponse:
        def messages() -> Iterator[pb.UploadAudioRequest]:
            header = pb.UploadHeader(filename=filename, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
            yield pb.UploadAudioRequest(header=header)
            for offset in range(0, len(data), CHUNK_BYTES):
                yield pb.UploadAudioRequest(chunk=data[offset : offset + CHUNK_BYTES])

        return self.stub.UploadAudio(messages(), timeout=self.timeout)

    def upload_file(self, path: Path) -> pb.UploadAudioResponse:
        return self.upload_bytes(path.read_bytes(), path.name)

    def submit(
        self, request_id: str, calls: list[CallSpec], max_backoff_seconds: float = 0.0
    ) -> pb.SubmitBatchResponse:
        """Submit a batch. With ``max_backoff_seconds`` > 0, a full backlog (RESOURCE_EXHAUSTED) is
        retried with exponential back-off for up to that long — safe, because the request id makes
        the submission idempotent."""
        request = pb.SubmitBatchRequest(request_id=request_id, calls=[call_spec_to_pb(c) for c in calls])
        deadline = time.monotonic() + max_backoff_seconds
        delay = 0.2
        while True:
            try:
                return self.stub.SubmitBatch(request, timeout=self.timeout)
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 10.0)

    def get_batch(self, batch_id: str) -> pb.GetBatchResponse:
        return self.stub.GetBatch(pb.GetBatchRequest(batch_id=batch_id), timeout=self.timeout)

    def watch(self, batch_id: str, timeout: float | None = None) -> Iterator[pb.WatchBatchResponse]:
        return self.stub.WatchBatch(pb.WatchBatchRequest(batch_id=batch_id), timeout=timeout)

    def get_audio(self, call_id: str, batch_id: str = "") -> bytes:
        """The call's original audio (checked against the sha256 the gateway sends)."""
        request = pb.GetAudioRequest(call_id=call_id, batch_id=batch_id)
        chunks = list(self.stub.GetAudio(request, timeout=self.timeout))
        data = b"".join(c.data for c in chunks)
        if chunks and (len(data) != chunks[0].size or hashlib.sha256(data).hexdigest() != chunks[0].sha256):
            raise ValueError(f"audio of {call_id} arrived damaged")
        return data

    def login(self, username: str, password: str, totp_code: str) -> pb.LoginResponse:
        request = pb.LoginRequest(username=username, password=password, totp_code=totp_code)
        return self.stub.Login(request, timeout=self.timeout)

    def get_report(self, call_id: str, batch_id: str = "") -> pb.GetReportResponse:
        return self.stub.GetReport(pb.GetReportRequest(call_id=call_id, batch_id=batch_id), timeout=self.timeout)

    def upload_and_submit(self, request_id: str, calls: list[LocalCall]) -> pb.SubmitBatchResponse:
        specs = []
        for call in calls:
            uploaded = self.upload_file(call.path)
            specs.append(
                call.spec.model_copy(update={"audio_key": uploaded.audio_key, "audio_sha256": uploaded.sha256})
            )
        return self.submit(request_id, specs)

    # ---- review, exports, coverage (callqc.v1.Review) ------------------------------------------

    def get_review_item(self, call_id: str, batch_id: str = "") -> rpb.ReviewItem:
        request = rpb.GetReviewItemRequest(call_id=call_id, batch_id=batch_id)
        return self.review.GetReviewItem(request, timeout=self.timeout).item

    def submit_review(
        self,
        call_id: str,
        batch_id: str,
        kind: str,
        *,
        expected_revision: int,
        finding_id: str = "",
        reason: str = "",
        finding: pb.Finding | None = None,
    ) -> rpb.ReviewItem:
        """``kind``: confirm | reject | add | complete."""
        request = rpb.SubmitReviewRequest(
            call_id=call_id,
            batch_id=batch_id,
            expected_revision=expected_revision,
            kind=rpb.ReviewActionKind.Value(f"REVIEW_ACTION_KIND_{kind.upper()}"),
            finding_id=finding_id,
            reason=reason,
            finding=finding,
        )
        return self.review.SubmitReview(request, timeout=self.timeout).item

    def appeal_review(self, call_id: str, batch_id: str, *, expected_revision: int, reason: str) -> rpb.ReviewItem:
        request = rpb.AppealReviewRequest(
            call_id=call_id, batch_id=batch_id, expected_revision=expected_revision, reason=reason
        )
        return self.review.AppealReview(request, timeout=self.timeout).item

    def finalize_review(self, call_id: str, batch_id: str, *, expected_revision: int, reason: str) -> rpb.ReviewItem:
        request = rpb.FinalizeReviewRequest(
            call_id=call_id, batch_id=batch_id, expected_revision=expected_revision, reason=reason
        )
        return self.review.FinalizeReview(request, timeout=self.timeout).item

    def assign_reviewer(self, batch_id: str, reviewer: str, remove: bool = False) -> rpb.AssignReviewerResponse:
        request = rpb.AssignReviewerRequest(batch_id=batch_id, reviewer=reviewer, remove=remove)
        return self.review.AssignReviewer(request, timeout=self.timeout)

    def list_assignments(self, reviewer: str = "") -> rpb.ListAssignmentsResponse:
        return self.review.ListAssignments(rpb.ListAssignmentsRequest(reviewer=reviewer), timeout=self.timeout)

    def get_raw_transcript(self, call_id: str, batch_id: str = "") -> rpb.GetRawTranscriptResponse:
        request = rpb.GetRawTranscriptRequest(call_id=call_id, batch_id=batch_id)
        return self.review.GetRawTranscript(request, timeout=self.timeout)

    def export_findings(self, batch_id: str, fmt: str = "csv", machine_only: bool = False) -> bytes:
        """The batch's findings as CSV or JSONL bytes."""
        request = rpb.ExportFindingsRequest(
            batch_id=batch_id,
            format=rpb.EXPORT_FORMAT_JSONL if fmt == "jsonl" else rpb.EXPORT_FORMAT_CSV,
            machine_only=machine_only,
        )
        return b"".join(chunk.data for chunk in self.review.ExportFindings(request, timeout=self.timeout))

    def get_coverage(self, day: str = "", utc_offset: str = "") -> rpb.GetCoverageResponse:
        request = rpb.GetCoverageRequest(day=day, utc_offset=utc_offset)
        return self.review.GetCoverage(request, timeout=self.timeout)
