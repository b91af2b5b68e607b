"""Audio intake: probe, validate against caps, decode once to 16 kHz mono PCM per channel.

Every failure is an :class:`AudioError` with a stable code (the proto's ``CallError`` names) so the
call ends FAILED with a precise reason while the rest of the batch proceeds.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import av
import numpy as np
from faster_whisper.audio import decode_audio

from callqc.errors import CallErrorCode, CallProcessingError
from callqc.models import ChannelLayout
from callqc.settings import AudioSettings


class AudioError(CallProcessingError):
    """The audio cannot be inspected; not worth retrying."""


@dataclass(frozen=True)
class AudioProbe:
    format_name: str
    codec: str
    channels: int
    sample_rate: int
    duration: float


@dataclass
class DecodedAudio:
    sha256: str
    sample_rate: int
    duration: float
    channels: list[np.ndarray]  # float32 in [-1, 1], one array per channel


def expected_channels(layout: ChannelLayout) -> int:
    return 1 if layout == ChannelLayout.MONO else 2


def probe(data: bytes, settings: AudioSettings) -> AudioProbe:
    """Read the container header only; enforce byte, channel and duration caps."""
    if not data:
        raise AudioError(CallErrorCode.AUDIO_EMPTY, "audio object is empty (0 bytes)")
    if len(data) > settings.max_bytes:
        raise AudioError(CallErrorCode.AUDIO_TOO_LARGE, f"audio is {len(data)} bytes; the cap is {settings.max_bytes}")
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            streams = container.streams.audio
            if not streams:
                raise AudioError(CallErrorCode.AUDIO_UNDECODABLE, "no audio stream in the file")
            stream = streams[0]
            channels = int(stream.codec_context.channels or 0)
            rate = int(stream.codec_context.sample_rate or 0)
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / av.time_base
            else:
                duration = 0.0
            result = AudioProbe(container.format.name, stream.codec_context.name, channels, rate, duration)
    except AudioError:
        raise
    except (av.error.FFmpegError, ValueError, OSError, EOFError) as err:
        raise AudioError(CallErrorCode.AUDIO_UNDECODABLE, f"not a readable audio file: {err}") from err
    if result.channels < 1 or result.sample_rate < 1:
        raise AudioError(
            CallErrorCode.AUDIO_UNDECODABLE,
            f"invalid stream parameters: {result.channels} channels at {result.sample_rate} Hz",
        )
    if result.duration > settings.max_duration_seconds:
        raise AudioError(
            CallErrorCode.AUDIO_TOO_LONG,
            f"audio lasts {result.duration:.0f}s; the cap is {settings.max_duration_seconds:.0f}s",
        )
    return result


def decode(data: bytes, layout: ChannelLayout, settings: AudioSettings) -> DecodedAudio:
    """Probe, check the channel layout, and decode to per-channel float32 at the target rate."""
    info = probe(data, settings)
    want = expected_channels(layout)
    if info.channels != want:
        raise AudioError(
            CallErrorCode.CHANNEL_MISMATCH,
            f"channel layout {layout.value} needs {want} channel(s); the file has {info.channels}",
        )
    try:
        if want == 2:
            left, right = decode_audio(io.BytesIO(data), sampling_rate=settings.sample_rate, split_stereo=True)
            channels = [np.asarray(left, np.float32), np.asarray(right, np.float32)]
        else:
            channels = [np.asarray(decode_audio(io.BytesIO(data), sampling_rate=settings.sample_rate))]
    except (av.error.FFmpegError, ValueError, OSError, EOFError) as err:
        raise AudioError(CallErrorCode.AUDIO_UNDECODABLE, f"decoding failed: {err}") from err
    samples = len(channels[0])
    if samples == 0:
        raise AudioError(CallErrorCode.AUDIO_EMPTY, "audio decodes to no samples")
    duration = samples / settings.sample_rate
    if duration > settings.max_duration_seconds:
        raise AudioError(
            CallErrorCode.AUDIO_TOO_LONG,
            f"audio lasts {duration:.0f}s; the cap is {settings.max_duration_seconds:.0f}s",
        )
    return DecodedAudio(hashlib.sha256(data).hexdigest(), settings.sample_rate, duration, channels)


def to_pcm16(samples: np.ndarray) -> bytes:
    """float32 [-1, 1] → little-endian signed 16-bit PCM bytes."""
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def from_pcm16(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32767.0
