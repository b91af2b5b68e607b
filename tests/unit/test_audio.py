"""callqc.audio: probe/decode on audio generated in the test (WAV via numpy + stdlib wave, FLAC via PyAV).

More formats: test_audio_formats.py; the hostile corpus and the decoder's limits: test_audio_hostile.py.
"""

from __future__ import annotations

import hashlib
import io

import av
import numpy as np
import pytest

from callqc.audio import AudioError, decode, expected_channels, from_pcm16, probe, to_pcm16
from callqc.errors import CallErrorCode
from callqc.models import ChannelLayout
from callqc.settings import AudioSettings
from tests.data.audio.factory import make_wav, tone

DEFAULTS = AudioSettings()


def make_flac_stereo(rate: int, seconds: float) -> bytes:
    """A stereo FLAC encoded with PyAV (a non-WAV container)."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="flac") as out:
        stream = out.add_stream("flac", rate=rate, layout="stereo")
        samples = (np.stack([tone(rate, seconds), tone(rate, seconds, 880.0)]) * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1, order="F"), format="s16", layout="stereo")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def expect_error(code: CallErrorCode, data: bytes, layout: ChannelLayout, settings: AudioSettings = DEFAULTS) -> None:
    with pytest.raises(AudioError) as info:
        decode(data, layout, settings)
    assert info.value.code == code
    assert info.value.message.strip()


# ---- valid input --------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [16000, 8000, 44100])
@pytest.mark.parametrize("layout", [ChannelLayout.STEREO_AGENT_LEFT, ChannelLayout.STEREO_AGENT_RIGHT])
def test_stereo_wav_decodes_to_two_channels_at_16k(rate: int, layout: ChannelLayout) -> None:
    data = make_wav(2, rate, 1.5)
    info = probe(data, DEFAULTS)
    assert (info.format_name, info.channels, info.sample_rate) == ("wav", 2, rate)
    assert info.duration == pytest.approx(1.5, abs=1e-3)

    out = decode(data, layout, DEFAULTS)
    assert out.sample_rate == 16000
    assert out.duration == pytest.approx(1.5, abs=1e-2)
    assert len(out.channels) == 2
    assert all(ch.dtype == np.float32 and ch.shape == (round(1.5 * 16000),) for ch in out.channels)
    assert out.sha256 == hashlib.sha256(data).hexdigest()
    # channels are kept apart and in order: the left tone is louder than the right one
    left, right = (float(np.sqrt(np.mean(ch**2))) for ch in out.channels)
    assert left == pytest.approx(0.3 / np.sqrt(2), rel=0.05)
    assert right == pytest.approx(0.15 / np.sqrt(2), rel=0.05)


def test_mono_wav_decodes_to_one_channel() -> None:
    out = decode(make_wav(1, 8000, 2.0), ChannelLayout.MONO, DEFAULTS)
    assert out.sample_rate == 16000
    assert len(out.channels) == 1
    assert out.duration == pytest.approx(2.0, abs=1e-2)
    assert np.abs(out.channels[0]).max() <= 1.0


def test_stereo_flac_decodes() -> None:
    data = make_flac_stereo(8000, 1.0)
    assert probe(data, DEFAULTS).codec == "flac"
    out = decode(data, ChannelLayout.STEREO_AGENT_LEFT, DEFAULTS)
    assert len(out.channels) == 2
    assert out.duration == pytest.approx(1.0, abs=2e-2)


def test_expected_channels() -> None:
    assert expected_channels(ChannelLayout.MONO) == 1
    assert expected_channels(ChannelLayout.STEREO_AGENT_LEFT) == 2
    assert expected_channels(ChannelLayout.STEREO_AGENT_RIGHT) == 2


# ---- layout mismatch ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("channels", "layout"),
    [
        (1, ChannelLayout.STEREO_AGENT_LEFT),
        (1, ChannelLayout.STEREO_AGENT_RIGHT),
        (2, ChannelLayout.MONO),
        (3, ChannelLayout.STEREO_AGENT_LEFT),
    ],
)
def test_channel_count_must_match_layout(channels: int, layout: ChannelLayout) -> None:
    expect_error(CallErrorCode.CHANNEL_MISMATCH, make_wav(channels, 16000, 0.5), layout)


# ---- broken input ---------------------------------------------------------------------------------


def test_empty_bytes_are_audio_empty() -> None:
    with pytest.raises(AudioError) as info:
        probe(b"", DEFAULTS)
    assert info.value.code == CallErrorCode.AUDIO_EMPTY
    expect_error(CallErrorCode.AUDIO_EMPTY, b"", ChannelLayout.MONO)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(np.random.default_rng(7).bytes(4096), id="random-bytes"),
        pytest.param(b"\x89PNG\r\n\x1a\n" + b"\x00" * 256, id="png-header"),
        pytest.param(b"hello, this is not audio\n" * 20, id="text"),
    ],
)
def test_non_audio_is_an_unsupported_format(data: bytes) -> None:
    """Recognisably not audio: refused from its bytes, before any decoder runs."""
    with pytest.raises(AudioError) as info:
        probe(data, DEFAULTS)
    assert info.value.code == CallErrorCode.AUDIO_UNSUPPORTED_FORMAT
    assert "not an accepted audio format" in info.value.message
    expect_error(CallErrorCode.AUDIO_UNSUPPORTED_FORMAT, data, ChannelLayout.STEREO_AGENT_LEFT)


def test_wav_cut_inside_its_header_is_undecodable() -> None:
    data = make_wav(2, 16000, 1.0)[:20]
    with pytest.raises(AudioError) as info:
        probe(data, DEFAULTS)
    assert info.value.code == CallErrorCode.AUDIO_UNDECODABLE
    assert "corrupt WAV header" in info.value.message
    expect_error(CallErrorCode.AUDIO_UNDECODABLE, data, ChannelLayout.STEREO_AGENT_LEFT)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(make_wav(2, 16000, 0.0), id="no-frames"),
        pytest.param(make_wav(2, 16000, 1.0)[:44], id="header-only"),
    ],
)
def test_wav_without_samples_is_audio_empty(data: bytes) -> None:
    """A well-formed header with no sample data: readable container, nothing to decode."""
    expect_error(CallErrorCode.AUDIO_EMPTY, data, ChannelLayout.STEREO_AGENT_LEFT)


def test_truncated_wav_is_refused_unless_damaged_audio_is_accepted() -> None:
    """The header claims 1 s but only ~0.015 s of frames follow."""
    data = make_wav(2, 16000, 1.0)[:1000]
    expect_error(CallErrorCode.AUDIO_TRUNCATED, data, ChannelLayout.STEREO_AGENT_LEFT)
    out = decode(data, ChannelLayout.STEREO_AGENT_LEFT, AudioSettings(accept_damaged=True))
    assert out.duration == pytest.approx((1000 - 44) / 4 / 16000, abs=1e-3)  # the real length, not the claim


# ---- caps -------------------------------------------------------------------------------------------


def test_byte_cap() -> None:
    data = make_wav(2, 16000, 0.5)
    with pytest.raises(AudioError) as info:
        probe(data, AudioSettings(max_bytes=len(data) - 1))
    assert info.value.code == CallErrorCode.AUDIO_TOO_LARGE
    assert str(len(data)) in info.value.message
    assert probe(data, AudioSettings(max_bytes=len(data))).channels == 2  # the cap itself is allowed


def test_duration_cap() -> None:
    small = AudioSettings(max_duration_seconds=1)
    expect_error(CallErrorCode.AUDIO_TOO_LONG, make_wav(2, 16000, 3.0), ChannelLayout.STEREO_AGENT_LEFT, small)
    expect_error(CallErrorCode.AUDIO_TOO_LONG, make_wav(1, 8000, 1.5), ChannelLayout.MONO, small)
    assert decode(make_wav(2, 16000, 0.9), ChannelLayout.STEREO_AGENT_LEFT, small).duration < 1


def test_audio_error_survives_pickling() -> None:
    import pickle

    err = pickle.loads(pickle.dumps(AudioError(CallErrorCode.AUDIO_EMPTY, "nothing")))
    assert isinstance(err, AudioError)
    assert (err.code, err.message) == (CallErrorCode.AUDIO_EMPTY, "nothing")


# ---- PCM16 ------------------------------------------------------------------------------------------


def test_pcm16_round_trip() -> None:
    samples = np.concatenate([tone(16000, 0.25), np.array([-1.0, 1.0, 0.0, 1.5, -2.0], np.float32)])
    data = to_pcm16(samples)
    assert len(data) == 2 * len(samples)
    back = from_pcm16(data)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, np.clip(samples, -1, 1), atol=1.0 / 32767 + 1e-7)
    assert back[-2] == pytest.approx(1.0)  # clipped, not wrapped around
    assert back[-1] == pytest.approx(-1.0)
    assert np.frombuffer(to_pcm16(np.array([1.0], np.float32)), "<i2")[0] == 32767
