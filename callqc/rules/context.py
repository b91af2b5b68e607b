"""One call's text, normalised once: segment boundaries, evidence and audio times of spans."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from callqc.models import Role, Segment, Transcript
from callqc.rules import timing
from callqc.textnorm import SEGMENT_BREAK, SEPARATOR, normalize, phonetic

SCOPES: dict[str, frozenset[Role]] = {
    "agent": frozenset({Role.AGENT, Role.UNKNOWN}),
    "customer": frozenset({Role.CUSTOMER, Role.THIRD_PARTY, Role.UNKNOWN}),
    "any": frozenset(Role),
}


@dataclass(frozen=True)
class RuleHit:
    """A pattern match in normalised whole-call coordinates, inside one segment."""

    pattern: int
    seg: int
    start: int
    end: int
    phonetic: bool

    def overlaps(self, other: RuleHit) -> bool:
        return self.seg == other.seg and self.start < other.end and other.start < self.end

    def gap(self, other: RuleHit) -> int:
        return max(other.start - self.end, self.start - other.end, 0)


class CallText:
    """The segments joined with a separator no pattern crosses, normalised in one pass."""

    def __init__(self, transcript: Transcript, with_phonetic: bool = False) -> None:
        self.transcript = transcript
        self.segments: list[Segment] = transcript.segments
        texts = [s.text for s in self.segments]
        self.norm = normalize(SEGMENT_BREAK.join(texts))
        self.text = self.norm.text
        lengths = np.fromiter((len(t) + 1 for t in texts), dtype=np.int64, count=len(texts))
        self.orig_starts = np.concatenate(([0], np.cumsum(lengths)[:-1])) if texts else np.zeros(0, np.int64)
        breaks = np.searchsorted(self.norm.offsets, self.orig_starts[1:] - 1)  # where each SEPARATOR landed
        self.starts = np.concatenate(([0], breaks + 1)) if texts else np.zeros(0, np.int64)
        self.ends = np.concatenate((breaks, [len(self.text)])) if texts else np.zeros(0, np.int64)
        self.phonetic_text = phonetic(self.text) if with_phonetic else ""
        self._spans: dict[int, list[tuple[int, int, float, float]]] = {}
        self.duration = transcript.duration or max((s.end for s in self.segments), default=0.0)

    @property
    def buffer(self) -> str:
        """What the matcher scans: the text, then (if used) its phonetic layer after a separator."""
        return self.text + SEPARATOR + self.phonetic_text if self.phonetic_text else self.text

    def seg_of(self, pos: int) -> int:
        return int(np.searchsorted(self.starts, pos, side="right")) - 1

    def seg_text(self, seg: int) -> str:
        return self.text[int(self.starts[seg]) : int(self.ends[seg])]

    def role(self, seg: int) -> Role:
        return self.segments[seg].role

    def in_scope(self, seg: int, scope: str) -> bool:
        return self.segments[seg].role in SCOPES[scope]

    def local_span(self, seg: int, start: int, end: int) -> tuple[int, int]:
        """Normalised whole-call span → span in ``segments[seg].text``."""
        o0, o1 = self.norm.to_original(start, end)
        base = int(self.orig_starts[seg])
        return o0 - base, o1 - base

    def evidence(self, seg: int, start: int, end: int) -> str:
        s, e = self.local_span(seg, start, end)
        return self.segments[seg].text[s:e]

    def original_between(self, start: int, end: int) -> str:
        """Original text from normalised ``start`` up to (not including) normalised ``end``."""
        if end <= start:
            return ""
        stop = int(self.norm.offsets[end]) if end < len(self.norm.offsets) else len(self.norm.original)
        return self.norm.original[int(self.norm.offsets[start]) : stop]

    def time_span(self, seg: int, start: int, end: int) -> tuple[float, float]:
        segment = self.segments[seg]
        if seg not in self._spans:
            self._spans[seg] = timing.word_char_spans(segment)
        s, e = self.local_span(seg, start, end)
        return timing.time_span(segment, s, e, self._spans[seg])
