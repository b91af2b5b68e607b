"""callqc.gateway.convert: validation of submitted calls and the wire ⇄ domain mapping."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from callqc.errors import CallErrorCode, CallProcessingError
from callqc.gateway.convert import call_spec_from_pb, call_spec_to_pb, counts_of, status_to_pb
from callqc.jobs import BatchManifest, CallStatus
from callqc.models import CallMetadata, CallSpec, CallState, ChannelLayout, Ledger
from callqc.v1 import callqc_pb2 as pb

PREFIX = "audio/"
SHA = "0123456789abcdef" * 4


def good_call(**fields: object) -> pb.CallInput:
    call = pb.CallInput(
        call_id="call-001",
        audio_key="audio/uploads/" + SHA,
        channel_layout=pb.CHANNEL_LAYOUT_STEREO_AGENT_RIGHT,
        language="zh",
        audio_sha256=SHA.upper(),
        metadata=pb.CallMetadata(
            agent_id="A7",
            customer_id="C9",
            call_started_at="2026-11-20T22:15:00+08:00",
            attempts_today=2,
            ledger=pb.Ledger(amount_due="35000.50", overdue_days=40),
            outsourced=True,
            principal="Lender Co",
        ),
    )
    for name, value in fields.items():
        setattr(call, name, value)
    return call


def with_meta(**meta: object) -> pb.CallInput:
    call = good_call()
    for name, value in meta.items():
        if name == "ledger":
            call.metadata.ledger.CopyFrom(value)  # type: ignore[arg-type]
        else:
            setattr(call.metadata, name, value)
    return call


def rejected(call: pb.CallInput) -> CallProcessingError:
    with pytest.raises(CallProcessingError) as info:
        call_spec_from_pb(call, PREFIX)
    assert info.value.message.strip()
    return info.value


# ---- accept ------------------------------------------------------------------------------------


def test_good_call_is_accepted() -> None:
    spec = call_spec_from_pb(good_call(), PREFIX)
    assert spec.call_id == "call-001"
    assert spec.audio_key == "audio/uploads/" + SHA
    assert spec.channel_layout == ChannelLayout.STEREO_AGENT_RIGHT
    assert spec.language == "zh"
    assert spec.audio_sha256 == SHA  # normalised to lower case
    meta = spec.metadata
    assert (meta.agent_id, meta.customer_id, meta.attempts_today) == ("A7", "C9", 2)
    assert meta.call_started_at == datetime(2026, 11, 20, 22, 15, tzinfo=timezone(timedelta(hours=8)))
    assert meta.ledger == Ledger(amount_due=35000.5, overdue_days=40)
    assert (meta.outsourced, meta.principal) == (True, "Lender Co")


def test_defaults_for_a_minimal_call() -> None:
    spec = call_spec_from_pb(pb.CallInput(call_id="x", audio_key="audio/x.wav"), PREFIX)
    assert spec.channel_layout == ChannelLayout.STEREO_AGENT_LEFT  # UNSPECIFIED
    assert spec.language == "zh"
    assert spec.audio_sha256 == ""
    assert spec.metadata == CallMetadata()


@pytest.mark.parametrize(
    ("value", "layout"),
    [
        (pb.CHANNEL_LAYOUT_STEREO_AGENT_LEFT, ChannelLayout.STEREO_AGENT_LEFT),
        (pb.CHANNEL_LAYOUT_STEREO_AGENT_RIGHT, ChannelLayout.STEREO_AGENT_RIGHT),
        (pb.CHANNEL_LAYOUT_MONO, ChannelLayout.MONO),
    ],
)
def test_layouts(value: int, layout: ChannelLayout) -> None:
    assert call_spec_from_pb(good_call(channel_layout=value), PREFIX).channel_layout == layout


def test_language_is_case_insensitive_and_en_is_allowed() -> None:
    assert call_spec_from_pb(good_call(language="EN"), PREFIX).language == "en"


def test_utc_z_suffix_is_accepted() -> None:
    spec = call_spec_from_pb(with_meta(call_started_at="2026-11-20T14:15:00Z"), PREFIX)
    assert spec.metadata.call_started_at is not None
    assert spec.metadata.call_started_at.utcoffset() == timedelta(0)


# ---- reject ------------------------------------------------------------------------------------


@pytest.mark.parametrize("call_id", ["", "has space", "slash/inside", "x" * 129, "中文", "semi;colon"])
def test_bad_call_id(call_id: str) -> None:
    assert rejected(good_call(call_id=call_id)).code == CallErrorCode.INVALID_CALL


@pytest.mark.parametrize(
    "audio_key",
    ["", "other/x.wav", "/audio/x.wav", "audio/../jobs/open/b1", "audio/a/../../x", "AUDIO/x.wav", "audi"],
)
def test_bad_audio_key(audio_key: str) -> None:
    assert rejected(good_call(audio_key=audio_key)).code == CallErrorCode.INVALID_CALL


def test_unknown_channel_layout() -> None:
    assert rejected(good_call(channel_layout=99)).code == CallErrorCode.INVALID_CALL


@pytest.mark.parametrize("language", ["fr", "zh-CN", "cmn", "english"])
def test_unknown_language(language: str) -> None:
    assert rejected(good_call(language=language)).code == CallErrorCode.INVALID_CALL


@pytest.mark.parametrize("sha", ["abc", "g" * 64, "a" * 63, "a" * 65, SHA[:-1] + " "])
def test_bad_sha256(sha: str) -> None:
    assert rejected(good_call(audio_sha256=sha)).code == CallErrorCode.INVALID_CALL


@pytest.mark.parametrize(
    "started",
    ["2026-11-20T22:15:00", "2026-11-20", "yesterday", "2026-13-01T00:00:00+08:00", "22:15 20/11/2026 +0800"],
)
def test_bad_call_started_at(started: str) -> None:
    assert rejected(with_meta(call_started_at=started)).code == CallErrorCode.INVALID_METADATA


@pytest.mark.parametrize(
    "ledger",
    [
        pb.Ledger(amount_due="-1.00", overdue_days=3),
        pb.Ledger(amount_due="10.00", overdue_days=-1),
        pb.Ledger(amount_due="ten", overdue_days=3),
        pb.Ledger(amount_due="1,000.00", overdue_days=3),
        pb.Ledger(amount_due="0x10", overdue_days=3),
    ],
)
def test_bad_ledger(ledger: pb.Ledger) -> None:
    assert rejected(with_meta(ledger=ledger)).code == CallErrorCode.INVALID_METADATA


def test_negative_attempts_today() -> None:
    assert rejected(with_meta(attempts_today=-1)).code == CallErrorCode.INVALID_METADATA


@pytest.mark.parametrize("field", ["call_id", "audio_sha256"])
def test_trailing_newline_is_rejected(field: str) -> None:
    value = {"call_id": "call-001\n", "audio_sha256": SHA + "\n"}[field]
    assert rejected(good_call(**{field: value})).code == CallErrorCode.INVALID_CALL


def test_nan_amount_is_invalid_metadata() -> None:
    call = with_meta(ledger=pb.Ledger(amount_due="nan", overdue_days=1))
    assert rejected(call).code == CallErrorCode.INVALID_METADATA


@pytest.mark.parametrize("amount", ["inf", "1e400"])
def test_infinite_amount_is_invalid_metadata(amount: str) -> None:
    call = with_meta(ledger=pb.Ledger(amount_due=amount, overdue_days=1))
    try:
        spec = call_spec_from_pb(call, PREFIX)
    except CallProcessingError as err:
        assert err.code == CallErrorCode.INVALID_METADATA
        return
    manifest = BatchManifest(batch_id="b1", request_id="r", client="local", request_digest="d", calls=[spec])
    BatchManifest.model_validate_json(manifest.model_dump_json())  # raises: amount_due is null
    pytest.fail("an infinite amount was accepted")


# ---- round trip --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        CallSpec(call_id="a", audio_key="audio/a.wav"),
        CallSpec(
            call_id="b:1.x_y-z",
            audio_key="audio/uploads/" + SHA,
            channel_layout=ChannelLayout.MONO,
            language="en",
            audio_sha256=SHA,
            metadata=CallMetadata(
                agent_id="A1",
                customer_id="C1",
                call_started_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
                attempts_today=4,
                ledger=Ledger(amount_due=35000.25, overdue_days=91),
                outsourced=True,
                principal="P",
            ),
        ),
        CallSpec(
            call_id="c",
            audio_key="audio/c.wav",
            channel_layout=ChannelLayout.STEREO_AGENT_RIGHT,
            metadata=CallMetadata(ledger=Ledger(amount_due=0, overdue_days=0)),
        ),
    ],
)
def test_round_trip(spec: CallSpec) -> None:
    assert call_spec_from_pb(call_spec_to_pb(spec), PREFIX) == spec


# ---- status ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "value"),
    [
        (CallState.QUEUED, pb.CALL_STATE_QUEUED),
        (CallState.RUNNING, pb.CALL_STATE_RUNNING),
        (CallState.DONE, pb.CALL_STATE_DONE),
        (CallState.FAILED, pb.CALL_STATE_FAILED),
    ],
)
def test_status_states(state: CallState, value: int) -> None:
    out = status_to_pb(CallStatus(call_id="c1", state=state, attempts=2, updated_at="2026-01-01T00:00:00.000+00:00"))
    assert out.state == value
    assert out.error == pb.CALL_ERROR_UNSPECIFIED
    assert (out.call_id, out.attempts, out.updated_at) == ("c1", 2, "2026-01-01T00:00:00.000+00:00")


@pytest.mark.parametrize("code", list(CallErrorCode))
def test_status_every_error_code_maps_to_the_proto(code: CallErrorCode) -> None:
    out = status_to_pb(CallStatus(call_id="c1", state=CallState.FAILED, error=code, error_message="why"))
    assert pb.CallError.Name(out.error) == f"CALL_ERROR_{code.value}"
    assert out.error_message == "why"


def test_every_proto_error_code_exists_in_the_domain() -> None:
    names = {v.name.removeprefix("CALL_ERROR_") for v in pb.CallError.DESCRIPTOR.values} - {"UNSPECIFIED"}
    assert names == {c.value for c in CallErrorCode}


def test_counts_of() -> None:
    states = [CallState.QUEUED, CallState.QUEUED, CallState.RUNNING, CallState.DONE, CallState.FAILED]
    counts = counts_of([CallStatus(call_id=str(i), state=s) for i, s in enumerate(states)])
    assert (counts.total, counts.queued, counts.running, counts.done, counts.failed) == (5, 2, 1, 1, 1)
