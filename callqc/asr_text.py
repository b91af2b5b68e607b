"""Decoded windows → timed segments on the channel's clock: split, simplified, sanitised.

Words are placed back on the channel's own timeline through the VAD regions they were cut from.
A segment ends at a long pause or at the end of a sentence, so segments are utterances, not
30 s windows. Mandarin text becomes Simplified Chinese (OpenCC t2s). Times are
made monotonic and kept inside the audio, so every evidence span points at real audio.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from callqc.asr_batch import Decoded
from callqc.asr_vad import Window
from callqc.errors import CallErrorCode, CallProcessingError

SENTENCE_END = ("。", "！", "？", "!", "?", ".", "…")
PAUSE = 0.8  # seconds of silence that end an utterance (the other party usually spoke in between)
LANGUAGE_ALIASES = {"cmn": "zh", "zho": "zh", "chi": "zh", "eng": "en"}


@dataclass
class AsrWord:
    text: str
    start: float
    end: float
    probability: float


@dataclass
class AsrSegment:
    start: float
    end: float
    text: str
    words: list[AsrWord] = field(default_factory=list)
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0


def whisper_language(hint: str, supported: list[str]) -> str:
    """The call's language hint (``zh``, ``zh-CN``, ``en-US``, ``cmn``…) as a whisper language code."""
    code = hint.strip().replace("_", "-").split("-")[0].lower()
    code = LANGUAGE_ALIASES.get(code, code)
    if code not in supported:
        raise CallProcessingError(CallErrorCode.INVALID_CALL, f"language {hint!r} is not supported by the ASR model")
    return code


class SimplifiedChinese:
    """OpenCC traditional → simplified, loaded once."""

    def __init__(self) -> None:
        import opencc

        self._converter = opencc.OpenCC("t2s")

    def __call__(self, text: str) -> str:
        return self._converter.convert(text)


def _placed_words(window: Window, decoded: Decoded) -> list[AsrWord]:
    """Every non-empty word on the channel clock, inside the speech region it was heard in."""
    placed = []
    for word in decoded.words:
        text = str(word["word"])
        if not text.strip():
            continue
        start, end = float(word["start"]), float(word["end"])
        region = window.region_at((start + end) / 2)
        at, until = window.to_channel(start, region), window.to_channel(end, region)
        placed.append(AsrWord(text, at, until, float(word["probability"])))
    return placed


def _join(words: list[AsrWord]) -> str:
    return "".join(w.text for w in words).strip()


def window_segments(window: Window, decoded: Decoded) -> list[AsrSegment]:
    """Split a decoded window into utterances (at pauses and sentence ends)."""
    quality = {"avg_logprob": decoded.avg_logprob, "no_speech_prob": decoded.no_speech_prob}
    placed = _placed_words(window, decoded)
    if not placed:  # no word timings: the window's text over its speech
        text = decoded.text.strip()
        if not text:
            return []
        start = window.regions[0][0] / 16000
        return [AsrSegment(start, window.regions[-1][1] / 16000, text, [], **quality)]
    groups: list[list[AsrWord]] = [[]]
    for word in placed:
        current = groups[-1]
        if current and (word.start - current[-1].end >= PAUSE or current[-1].text.rstrip().endswith(SENTENCE_END)):
            groups.append([])
        groups[-1].append(word)
    return [AsrSegment(g[0].start, g[-1].end, _join(g), g, **quality) for g in groups if _join(g)]


def finish(
    segments: list[AsrSegment], duration: float, convert: Callable[[str], str] | None = None
) -> list[AsrSegment]:
    """Sort, convert the script, drop empty text, and make every time monotonic and inside the audio."""
    out: list[AsrSegment] = []
    last = 0.0
    for seg in sorted(segments, key=lambda s: s.start):
        words = []
        for word in seg.words:
            text = convert(word.text) if convert else word.text
            start = min(max(word.start, last, 0.0), duration)
            end = min(max(word.end, start), duration)
            words.append(AsrWord(text.strip(), start, end, word.probability))
            last = start
        words = [w for w in words if w.text]
        text = (convert(seg.text) if convert else seg.text).strip()
        if not text or all(not ch.isalnum() for ch in text):
            continue
        start = words[0].start if words else min(max(seg.start, last, 0.0), duration)
        end = max(max(w.end for w in words), start) if words else min(max(seg.end, start), duration)
        if out and start < out[-1].start:
            start = out[-1].start
        out.append(AsrSegment(start, end, text, words, seg.avg_logprob, seg.no_speech_prob))
        last = max(last, start)
    return out
