"""What call-centre recorders produce decodes to 16 kHz PCM per channel, with channels kept apart.

Every file is encoded at test time (PyAV's FFmpeg encoders): WAV PCM 8/16 kHz, G.711 A-law / mu-law
WAV, MP3, Ogg/Opus, FLAC and AMR-NB, stereo and mono.
"""

from __future__ import annotations

import numpy as np
import pytest

from callqc.audio import decode, probe
from callqc.models import ChannelLayout
from callqc.settings import AudioSettings
from tests.data.audio.factory import FORMATS, encode, silent_flac

DEFAULTS = AudioSettings()
EXPECTED = {  # name → (container, codec) as the probe reports them
    "wav-pcm16-8k-stereo": ("wav", "pcm_s16le"),
    "wav-pcm16-16k-stereo": ("wav", "pcm_s16le"),
    "wav-pcm16-8k-mono": ("wav", "pcm_s16le"),
    "wav-alaw-8k-stereo": ("wav", "pcm_alaw"),
    "wav-mulaw-8k-mono": ("wav", "pcm_mulaw"),
    "mp3-16k-stereo": ("mp3", "mp3float"),
    "ogg-opus-stereo": ("ogg", "opus"),
    "flac-8k-stereo": ("flac", "flac"),
    "amr-nb-mono": ("amr", "amrnb"),
}


def _rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples**2)))


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_recorder_format_decodes_to_16k_per_channel(name: str) -> None:
    factory, count = FORMATS[name]
    data = factory()
    info = probe(data, DEFAULTS)
    assert (info.format_name, info.codec) == EXPECTED[name]
    assert info.channels == count
    layout = ChannelLayout.MONO if count == 1 else ChannelLayout.STEREO_AGENT_LEFT
    out = decode(data, layout, DEFAULTS)
    assert out.sample_rate == 16000
    assert len(out.channels) == count
    assert out.duration == pytest.approx(1.5, abs=0.05)  # codec priming / frame padding at most
    assert all(ch.dtype == np.float32 and len(ch) == len(out.channels[0]) for ch in out.channels)
    assert all(np.abs(ch).max() <= 1.0 for ch in out.channels)
    levels = [_rms(ch) for ch in out.channels]
    assert levels[0] == pytest.approx(0.3 / np.sqrt(2), rel=0.25)  # lossy codecs: loose
    if count == 2:
        assert levels[1] == pytest.approx(0.15 / np.sqrt(2), rel=0.25)
        assert levels[0] > 1.5 * levels[1]  # left stays left


@pytest.mark.parametrize(
    ("name", "layout"),
    [("wav-pcm16-8k-mono", ChannelLayout.STEREO_AGENT_LEFT), ("ogg-opus-stereo", ChannelLayout.MONO)],
)
def test_layout_is_checked_for_every_format(name: str, layout: ChannelLayout) -> None:
    from callqc.audio import AudioError
    from callqc.errors import CallErrorCode

    with pytest.raises(AudioError) as info:
        decode(FORMATS[name][0](), layout, DEFAULTS)
    assert info.value.code == CallErrorCode.CHANNEL_MISMATCH


def test_the_format_comes_from_the_bytes_not_the_name() -> None:
    """There is no name to lie about: a FLAC stored as ``call.wav`` is probed as FLAC and decoded."""
    data = encode("flac", "flac", 8000, 2, 1.0)
    assert probe(data, DEFAULTS).format_name == "flac"
    assert decode(data, ChannelLayout.STEREO_AGENT_RIGHT, DEFAULTS).duration == pytest.approx(1.0, abs=0.02)


def test_silent_flac_generator_is_valid_flac() -> None:
    out = decode(silent_flac(8000, 3.0), ChannelLayout.MONO, DEFAULTS)
    assert out.duration == pytest.approx(3.0, abs=1e-3)
    assert float(np.abs(out.channels[0]).max()) == 0.0
