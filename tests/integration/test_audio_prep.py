"""AudioPreparer against a real S3 server (rclone): verify, decode once (isolated), store 16 kHz PCM per channel."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

import callqc.pipeline as pipeline
from callqc.audio import AudioError, from_pcm16
from callqc.errors import CallErrorCode
from callqc.models import CallSpec, ChannelLayout
from callqc.pipeline import AudioPreparer
from callqc.settings import AudioSettings
from callqc.storage import ObjectStore
from tests.data.audio.factory import FORMATS, PNG, make_wav

pytestmark = pytest.mark.integration


def _spec(key: str, layout: ChannelLayout = ChannelLayout.STEREO_AGENT_LEFT, sha256: str = "") -> CallSpec:
    return CallSpec(call_id="c1", audio_key=key, channel_layout=layout, audio_sha256=sha256)


def test_stereo_call_is_stored_as_two_16k_channels(store: ObjectStore, raw_store: ObjectStore) -> None:
    data = make_wav(2, 8000, 1.5)
    raw_store.put_bytes("audio/call.wav", data)  # dropped in by the bank's recorder: plaintext
    prepared = AudioPreparer(store, AudioSettings()).prepare(_spec("audio/call.wav"))
    sha = hashlib.sha256(data).hexdigest()
    assert prepared.sha256 == sha and prepared.sample_rate == 16000
    assert prepared.duration == pytest.approx(1.5, abs=1e-3)
    assert prepared.channel_keys == [f"work/{sha}/16000/ch0.s16le", f"work/{sha}/16000/ch1.s16le"]
    left, right = (from_pcm16(store.get_bytes(key)) for key in prepared.channel_keys)
    assert len(left) == len(right) == 24000
    assert float(np.sqrt(np.mean(left**2))) > 1.5 * float(np.sqrt(np.mean(right**2)))  # left is the louder tone
    assert store.get_json(f"work/{sha}/16000/audio.json")["source"]["codec"] == "pcm_s16le"
    assert raw_store.get_bytes(prepared.channel_keys[0])[:4] != store.get_bytes(prepared.channel_keys[0])[:4]


def test_a_second_prepare_reuses_the_stored_channels(store: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.put_bytes("audio/a.ogg", FORMATS["ogg-opus-stereo"][0]())
    preparer = AudioPreparer(store, AudioSettings())
    first = preparer.prepare(_spec("audio/a.ogg"))
    monkeypatch.setattr(pipeline, "decode_file", lambda *a, **k: pytest.fail("decoded twice"))
    assert preparer.prepare(_spec("audio/a.ogg")) == first
    with pytest.raises(AudioError) as info:  # same bytes, other layout: still checked
        preparer.prepare(_spec("audio/a.ogg", ChannelLayout.MONO))
    assert info.value.code == CallErrorCode.CHANNEL_MISMATCH


def test_checksum_is_verified_before_decoding(store: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.put_bytes("audio/b.wav", make_wav(2, 16000, 0.5))
    monkeypatch.setattr(pipeline, "decode_file", lambda *a, **k: pytest.fail("decoded unverified bytes"))
    with pytest.raises(AudioError) as info:
        AudioPreparer(store, AudioSettings()).prepare(_spec("audio/b.wav", sha256="0" * 64))
    assert info.value.code == CallErrorCode.CHECKSUM_MISMATCH


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", CallErrorCode.AUDIO_EMPTY),
        (PNG, CallErrorCode.AUDIO_UNSUPPORTED_FORMAT),
        (make_wav(2, 16000, 1.0)[:3000], CallErrorCode.AUDIO_TRUNCATED),
        (make_wav(1, 16000, 0.5), CallErrorCode.CHANNEL_MISMATCH),
    ],
)
def test_bad_objects_fail_the_call_precisely(store: ObjectStore, data: bytes, code: CallErrorCode) -> None:
    store.put_bytes("audio/bad.wav", data)
    with pytest.raises(AudioError) as info:
        AudioPreparer(store, AudioSettings()).prepare(_spec("audio/bad.wav"))
    assert info.value.code == code


def test_missing_and_oversized_objects(store: ObjectStore) -> None:
    preparer = AudioPreparer(store, AudioSettings(max_bytes=1000))
    with pytest.raises(AudioError) as info:
        preparer.prepare(_spec("audio/nothing-here.wav"))
    assert info.value.code == CallErrorCode.AUDIO_NOT_FOUND
    store.put_bytes("audio/big.wav", make_wav(2, 16000, 0.5))
    with pytest.raises(AudioError) as info:
        preparer.prepare(_spec("audio/big.wav"))
    assert info.value.code == CallErrorCode.AUDIO_TOO_LARGE


def test_a_lying_extension_is_decoded_by_its_content(store: ObjectStore) -> None:
    store.put_bytes("audio/recording.wav", FORMATS["flac-8k-stereo"][0]())  # FLAC named .wav
    prepared = AudioPreparer(store, AudioSettings()).prepare(_spec("audio/recording.wav"))
    assert prepared.duration == pytest.approx(1.5, abs=0.02)
    meta = store.get_json(f"work/{prepared.sha256}/16000/audio.json")
    assert meta["source"]["format_name"] == "flac"
