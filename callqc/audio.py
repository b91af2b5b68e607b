"""Audio intake: sniff, check against caps, decode once (isolated) to 16 kHz PCM per channel.

The steps, cheapest and safest first:

1. size caps and a pure-Python look at the first bytes (:mod:`callqc.audio_sniff`): the format is
   taken from the content, never the file name; WAV headers are checked against the caps and the
   bytes present, so a header that lies is caught before any decoder runs;
2. the decoder runs in a child process with CPU-time, memory, output-size and wall-clock limits
   (:mod:`callqc.audio_sandbox`, :mod:`callqc.audio_worker`): it probes the stream (codec, channels,
   rate, declared duration) and refuses over-cap input before decoding a sample, then writes
   16 kHz s16le per channel to files.

Every failure is an :class:`AudioError` with a stable code (the proto's ``CallError`` names) so the
call ends FAILED with a precise reason while the serving process and the rest of the batch go on.
"""

from __future__ import annotations

import hashlib
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from callqc.audio_sandbox import Limits, WorkerRun, classify, run_worker
from callqc.audio_sniff import AudioError, check_ogg_tail, inspect_head
from callqc.errors import CallErrorCode
from callqc.models import ChannelLayout
from callqc.settings import AudioSettings

__all__ = [
    "AudioError",
    "AudioProbe",
    "DecodedAudio",
    "DecodedFiles",
    "decode",
    "decode_file",
    "expected_channels",
    "from_pcm16",
    "probe",
    "probe_file",
    "to_pcm16",
]

HEAD_BYTES = 1 << 20  # enough for every chunk a WAV may carry before its samples
TAIL_BYTES = 65307  # the largest possible Ogg page


@dataclass(frozen=True)
class AudioProbe:
    format_name: str
    codec: str
    channels: int
    sample_rate: int
    duration: float  # declared by the container; 0.0 when it does not say


@dataclass(frozen=True)
class DecodedFiles:
    """The decoder's output on disk: one 16 kHz s16le file per channel."""

    probe: AudioProbe
    sample_rate: int
    samples: int  # per channel
    paths: list[Path]

    @property
    def duration(self) -> float:
        return self.samples / self.sample_rate


@dataclass
class DecodedAudio:
    sha256: str
    sample_rate: int
    duration: float
    channels: list[np.ndarray]  # float32 in [-1, 1], one array per channel


def expected_channels(layout: ChannelLayout) -> int:
    return 1 if layout == ChannelLayout.MONO else 2


def limits_for(settings: AudioSettings) -> Limits:
    """The decoder's limits; each output file may hold the duration cap at the target rate."""
    output = math.ceil((settings.max_duration_seconds + 2.0) * settings.sample_rate) * 2 + 65536
    return Limits(
        cpu_seconds=settings.decode_cpu_seconds,
        memory_bytes=settings.decode_memory_bytes,
        output_bytes=output,
        timeout_seconds=settings.decode_timeout_seconds,
    )


def _check_size(size: int, settings: AudioSettings) -> None:
    if size == 0:
        raise AudioError(CallErrorCode.AUDIO_EMPTY, "audio object is empty (0 bytes)")
    if size > settings.max_bytes:
        raise AudioError(CallErrorCode.AUDIO_TOO_LARGE, f"audio is {size} bytes; the cap is {settings.max_bytes}")


def _run(
    path: Path,
    want: int | None,
    layout: str,
    settings: AudioSettings,
    workdir: Path,
    on_run: Callable[[WorkerRun], None] | None,
) -> tuple[dict[str, Any], list[Path]]:
    size = path.stat().st_size
    _check_size(size, settings)
    with path.open("rb") as fh:
        head = fh.read(HEAD_BYTES)
    sniffed = inspect_head(head, size, settings.max_channels, settings.max_duration_seconds, settings.accept_damaged)
    if sniffed.demuxer == "ogg" and not settings.accept_damaged:
        with path.open("rb") as fh:
            fh.seek(max(0, size - TAIL_BYTES))
            check_ogg_tail(fh.read())
    if want is not None and sniffed.wav is not None and sniffed.wav.channels != want:
        raise AudioError(
            CallErrorCode.CHANNEL_MISMATCH,
            f"channel layout {layout} needs {want} channel(s); the file has {sniffed.wav.channels}",
        )
    outputs = [workdir / f"ch{index}.s16le" for index in range(want or 0)]
    job = {
        "input": str(path.resolve()),
        "demuxer": sniffed.demuxer,
        "outputs": [str(p) for p in outputs],
        "expected_channels": want,
        "layout": layout,
        "max_channels": settings.max_channels,
        "max_duration": settings.max_duration_seconds,
        "sample_rate": settings.sample_rate,
        "accept_damaged": settings.accept_damaged,
        "probe_only": want is None,
    }
    limits = limits_for(settings)
    run = run_worker(job, limits, workdir)
    if on_run is not None:
        on_run(run)
    error = classify(run, limits)
    if error is not None:
        raise error
    return run.reply, outputs


def _probe_of(reply: dict[str, Any]) -> AudioProbe:
    info = reply["probe"]
    return AudioProbe(
        info["format"], info["codec"], info["channels"], info["sample_rate"], float(info["duration"] or 0.0)
    )


def probe_file(path: Path, settings: AudioSettings, workdir: Path) -> AudioProbe:
    """Header-level facts about the file, checked against the caps (nothing is decoded)."""
    reply, _ = _run(path, None, "", settings, workdir, None)
    return _probe_of(reply)


def decode_file(
    path: Path,
    layout: ChannelLayout,
    settings: AudioSettings,
    workdir: Path,
    on_run: Callable[[WorkerRun], None] | None = None,
) -> DecodedFiles:
    """Check and decode ``path`` into ``workdir/ch<N>.s16le`` (16 kHz, s16le), isolated and capped."""
    reply, outputs = _run(path, expected_channels(layout), layout.value, settings, workdir, on_run)
    return DecodedFiles(_probe_of(reply), settings.sample_rate, int(reply["samples"]), outputs)


def probe(data: bytes, settings: AudioSettings) -> AudioProbe:
    """:func:`probe_file` on bytes."""
    _check_size(len(data), settings)
    with tempfile.TemporaryDirectory(prefix="callqc-probe-") as tmp:
        path = Path(tmp) / "input"
        path.write_bytes(data)
        return probe_file(path, settings, Path(tmp))


def decode(data: bytes, layout: ChannelLayout, settings: AudioSettings) -> DecodedAudio:
    """:func:`decode_file` on bytes, returning float32 channels (tests and small tools)."""
    _check_size(len(data), settings)
    with tempfile.TemporaryDirectory(prefix="callqc-decode-") as tmp:
        path = Path(tmp) / "input"
        path.write_bytes(data)
        out = decode_file(path, layout, settings, Path(tmp))
        channels = [from_pcm16(p.read_bytes()) for p in out.paths]
    return DecodedAudio(hashlib.sha256(data).hexdigest(), out.sample_rate, out.duration, channels)


def to_pcm16(samples: np.ndarray) -> bytes:
    """float32 [-1, 1] → little-endian signed 16-bit PCM bytes."""
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def from_pcm16(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32767.0
