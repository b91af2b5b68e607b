"""Where a channel speaks: digital-silence gate + the bundled Silero VAD, packed into decoder windows.

Silence is never decoded: runs of digital silence (the idle leg of a stereo recording) are skipped
without even running the VAD, the Silero model (faster-whisper's bundled ONNX, no torch) finds the
speech in the rest, and the speech regions of one channel are concatenated into windows of at most
30 s — each channel keeps its own windows, so the decoder never hears the other party.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16000
WINDOW_SECONDS = 30.0
_GATE_BLOCK = 1600  # 0.1 s
_GATE_PEAK = 2.5 / 32768  # ±2 LSB of 16-bit audio: digital silence, dither
_GATE_KEEP = 0.5  # seconds of context kept around sound for the VAD


@dataclass(frozen=True)
class VadConfig:
    threshold: float = 0.5
    min_silence_ms: int = 160
    speech_pad_ms: int = 200


@dataclass(frozen=True)
class Window:
    """Speech regions (sample ranges) of one channel, joined by short silences into one decoder input."""

    request: int  # which channel request it came from
    regions: tuple[tuple[int, int], ...]
    offsets: tuple[int, ...]  # where each region starts inside ``audio``
    audio: np.ndarray

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    def region_at(self, t: float) -> int:
        """The region that window time ``t`` falls in (or the nearest one, in a joining gap)."""
        sample = t * SAMPLE_RATE
        best, distance = 0, float("inf")
        for index, ((start, end), offset) in enumerate(zip(self.regions, self.offsets, strict=True)):
            inside = max(offset - sample, 0.0, sample - (offset + end - start))
            if inside < distance:
                best, distance = index, inside
        return best

    def to_channel(self, t: float, region: int) -> float:
        """Window time → channel time, clamped inside ``region``."""
        start, end = self.regions[region]
        sample = start + (t * SAMPLE_RATE - self.offsets[region])
        return float(min(max(sample, start), end)) / SAMPLE_RATE


def sounding_spans(audio: np.ndarray) -> list[tuple[int, int]]:
    """Sample ranges that are not digital silence, with a little context, merged."""
    blocks = len(audio) // _GATE_BLOCK + (1 if len(audio) % _GATE_BLOCK else 0)
    if blocks == 0:
        return []
    padded = np.zeros(blocks * _GATE_BLOCK, dtype=np.float32)
    padded[: len(audio)] = np.abs(audio)
    loud = np.flatnonzero(padded.reshape(blocks, _GATE_BLOCK).max(axis=1) > _GATE_PEAK)
    keep = round(_GATE_KEEP * SAMPLE_RATE / _GATE_BLOCK)
    spans: list[tuple[int, int]] = []
    for block in loud:
        start, end = max(0, block - keep), min(blocks, block + 1 + keep)
        if spans and start <= spans[-1][1]:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    return [(start * _GATE_BLOCK, min(end * _GATE_BLOCK, len(audio))) for start, end in spans]


def speech_regions(audio: np.ndarray, config: VadConfig) -> list[tuple[int, int]]:
    """Speech sample ranges of one 16 kHz channel (Silero VAD on the non-silent spans only)."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(
        threshold=config.threshold,
        min_silence_duration_ms=config.min_silence_ms,
        speech_pad_ms=config.speech_pad_ms,
        max_speech_duration_s=WINDOW_SECONDS,
    )
    regions: list[tuple[int, int]] = []
    for start, end in sounding_spans(audio):
        for ts in get_speech_timestamps(audio[start:end], options, sampling_rate=SAMPLE_RATE):
            regions.append((start + int(ts["start"]), start + int(ts["end"])))
    return regions


def fixed_regions(audio: np.ndarray) -> list[tuple[int, int]]:
    """Without VAD: the whole channel in 30 s pieces."""
    step = int(WINDOW_SECONDS * SAMPLE_RATE)
    return [(start, min(start + step, len(audio))) for start in range(0, len(audio), step)]


def pack_windows(
    request: int, audio: np.ndarray, regions: list[tuple[int, int]], gap_seconds: float = 0.0
) -> list[Window]:
    """Join consecutive regions (``gap_seconds`` of silence between them) into windows of at most 30 s."""
    limit, gap = int(WINDOW_SECONDS * SAMPLE_RATE), int(gap_seconds * SAMPLE_RATE)
    pieces = [(s, min(s + limit, end)) for start, end in regions for s in range(start, end, limit)]
    windows: list[Window] = []
    current: list[tuple[int, int]] = []
    length = 0
    for start, end in pieces:
        needed = end - start + (gap if current else 0)
        if current and length + needed > limit:
            windows.append(_window(request, audio, current, gap))
            current, length, needed = [], 0, end - start
        current.append((start, end))
        length += needed
    if current:
        windows.append(_window(request, audio, current, gap))
    return windows


def _window(request: int, audio: np.ndarray, regions: list[tuple[int, int]], gap: int) -> Window:
    silence = np.zeros(gap, dtype=np.float32)
    parts, offsets, at = [], [], 0
    for index, (start, end) in enumerate(regions):
        if index and gap:
            parts.append(silence)
            at += gap
        offsets.append(at)
        parts.append(audio[start:end].astype(np.float32, copy=False))
        at += end - start
    return Window(request, tuple(regions), tuple(offsets), np.concatenate(parts))
