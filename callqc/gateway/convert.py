"""Between the wire (callqc.v1 protobuf) and the domain (pydantic)."""

from __future__ import annotations

import math
import re
from datetime import datetime
from decimal import Decimal, InvalidOperation

from google.protobuf import json_format
from pydantic import ValidationError

from callqc.errors import CallErrorCode, CallProcessingError
from callqc.jobs import CallStatus
from callqc.models import CallMetadata, CallSpec, CallState, ChannelLayout, Ledger
from callqc.v1 import callqc_pb2 as pb

CALL_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # always used with fullmatch
SHA256_PATTERN = re.compile(r"[0-9a-fA-F]{64}")
LANGUAGES = {"zh", "en"}

_LAYOUTS = {
    pb.CHANNEL_LAYOUT_UNSPECIFIED: ChannelLayout.STEREO_AGENT_LEFT,
    pb.CHANNEL_LAYOUT_STEREO_AGENT_LEFT: ChannelLayout.STEREO_AGENT_LEFT,
    pb.CHANNEL_LAYOUT_STEREO_AGENT_RIGHT: ChannelLayout.STEREO_AGENT_RIGHT,
    pb.CHANNEL_LAYOUT_MONO: ChannelLayout.MONO,
}
_LAYOUT_TO_PB = {
    ChannelLayout.STEREO_AGENT_LEFT: pb.CHANNEL_LAYOUT_STEREO_AGENT_LEFT,
    ChannelLayout.STEREO_AGENT_RIGHT: pb.CHANNEL_LAYOUT_STEREO_AGENT_RIGHT,
    ChannelLayout.MONO: pb.CHANNEL_LAYOUT_MONO,
}


def valid_audio_key(key: str, audio_prefix: str) -> bool:
    """A key under the audio prefix with no empty, '.' or '..' path segments."""
    if not key.startswith(audio_prefix) or len(key) > 1024:
        return False
    return all(part not in ("", ".", "..") for part in key.split("/"))


def valid_call_id(call_id: str) -> bool:
    """Safe as one object-key segment: [A-Za-z0-9._:-]{1,128}, not only dots."""
    return CALL_ID_PATTERN.fullmatch(call_id) is not None and call_id.strip(".") != ""


valid_batch_id = valid_call_id


def _invalid(code: CallErrorCode, message: str) -> CallProcessingError:
    return CallProcessingError(code, message)


def metadata_from_pb(meta: pb.CallMetadata) -> CallMetadata:
    started = None
    if meta.call_started_at:
        try:
            started = datetime.fromisoformat(meta.call_started_at)
        except ValueError as err:
            raise _invalid(CallErrorCode.INVALID_METADATA, f"call_started_at is not RFC 3339: {err}") from err
        if started.utcoffset() is None:
            raise _invalid(CallErrorCode.INVALID_METADATA, "call_started_at must carry a time zone offset")
    ledger = None
    if meta.HasField("ledger"):
        try:
            amount = Decimal(meta.ledger.amount_due or "0")
        except InvalidOperation as err:
            raise _invalid(
                CallErrorCode.INVALID_METADATA, f"ledger.amount_due {meta.ledger.amount_due!r} is not a decimal"
            ) from err
        if not amount.is_finite() or not math.isfinite(float(amount)):
            raise _invalid(CallErrorCode.INVALID_METADATA, "ledger.amount_due must be a finite decimal")
        if amount < 0 or meta.ledger.overdue_days < 0:
            raise _invalid(CallErrorCode.INVALID_METADATA, "ledger amounts and days must not be negative")
        ledger = (float(amount), meta.ledger.overdue_days)
    if meta.attempts_today < 0:
        raise _invalid(CallErrorCode.INVALID_METADATA, "attempts_today must not be negative")
    try:
        return CallMetadata(
            agent_id=meta.agent_id,
            customer_id=meta.customer_id,
            call_started_at=started,
            attempts_today=meta.attempts_today,
            ledger=Ledger(amount_due=ledger[0], overdue_days=ledger[1]) if ledger else None,
            outsourced=meta.outsourced,
            principal=meta.principal,
        )
    except ValidationError as err:
        raise _invalid(CallErrorCode.INVALID_METADATA, str(err.errors()[0]["msg"])) from err


def call_spec_from_pb(call: pb.CallInput, audio_prefix: str) -> CallSpec:
    """Validate one call of a submission; raises CallProcessingError naming what is wrong."""
    if not valid_call_id(call.call_id):
        raise _invalid(CallErrorCode.INVALID_CALL, "call_id must match [A-Za-z0-9._:-]{1,128}")
    if not call.audio_key:
        raise _invalid(CallErrorCode.INVALID_CALL, "audio_key is empty")
    if not valid_audio_key(call.audio_key, audio_prefix):
        raise _invalid(CallErrorCode.INVALID_CALL, f"audio_key must be a key under {audio_prefix!r}")
    if call.channel_layout not in _LAYOUTS:
        raise _invalid(CallErrorCode.INVALID_CALL, f"unknown channel_layout {call.channel_layout}")
    language = (call.language or "zh").lower()
    if language not in LANGUAGES:
        raise _invalid(CallErrorCode.INVALID_CALL, f"language {call.language!r} is not one of {sorted(LANGUAGES)}")
    if call.audio_sha256 and not SHA256_PATTERN.fullmatch(call.audio_sha256):
        raise _invalid(CallErrorCode.INVALID_CALL, "audio_sha256 must be 64 hex digits")
    return CallSpec(
        call_id=call.call_id,
        audio_key=call.audio_key,
        channel_layout=_LAYOUTS[call.channel_layout],
        language=language,
        metadata=metadata_from_pb(call.metadata),
        audio_sha256=call.audio_sha256.lower(),
    )


def call_spec_to_pb(spec: CallSpec) -> pb.CallInput:
    meta = spec.metadata
    out = pb.CallInput(
        call_id=spec.call_id,
        audio_key=spec.audio_key,
        channel_layout=_LAYOUT_TO_PB[spec.channel_layout],
        language=spec.language,
        audio_sha256=spec.audio_sha256,
        metadata=pb.CallMetadata(
            agent_id=meta.agent_id,
            customer_id=meta.customer_id,
            call_started_at=meta.call_started_at.isoformat() if meta.call_started_at else "",
            attempts_today=meta.attempts_today,
            outsourced=meta.outsourced,
            principal=meta.principal,
        ),
    )
    if meta.ledger is not None:
        out.metadata.ledger.CopyFrom(
            pb.Ledger(amount_due=f"{meta.ledger.amount_due:.2f}", overdue_days=meta.ledger.overdue_days)
        )
    return out


def status_to_pb(status: CallStatus) -> pb.CallStatus:
    return pb.CallStatus(
        call_id=status.call_id,
        state=pb.CallState.Value(f"CALL_STATE_{status.state.value.upper()}"),
        error=pb.CallError.Value(f"CALL_ERROR_{status.error.value}") if status.error else pb.CALL_ERROR_UNSPECIFIED,
        error_message=status.error_message,
        updated_at=status.updated_at,
        attempts=status.attempts,
    )


def counts_of(statuses: list[CallStatus]) -> pb.BatchCounts:
    counts = pb.BatchCounts(total=len(statuses))
    for status in statuses:
        if status.state == CallState.QUEUED:
            counts.queued += 1
        elif status.state == CallState.RUNNING:
            counts.running += 1
        elif status.state == CallState.DONE:
            counts.done += 1
        elif status.state == CallState.FAILED:
            counts.failed += 1
    return counts


def report_from_json(data: bytes) -> pb.Report:
    return json_format.Parse(data, pb.Report(), ignore_unknown_fields=True)
