"""One call's text, normalised once: segment boundaries, evidence and audio times of spans."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from callqc.models import Role, Segment, Transcript
from callqc.rules import timing
from callqc.rules.matcher import utf8_offsets
from callqc.textnorm import SEGMENT_BREAK, SEPARATOR, normalize, phonetic

SCOPES: dict[str, frozenset[Role]] = {
    "agent": frozenset({Role.AGENT, Role.UNKNOWN}),
    "customer": frozenset({Role.CUSTOMER, Role.THIRD_PARTY, Role.UNKNOWN}),
    "any": frozenset(Role),
}


class RuleHit(NamedTuple):
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


AGENT_SIDE = SCOPES["agent"]


class CallText:
    """A call's segments, normalised in one pass, laid out for one scan.

    ``text`` holds the agent-side segments (agent, unknown) in time order, then the other segments
    in time order, each segment followed by a separator no pattern crosses. Agent-side text comes
    first so that a pattern that only needs the agent's *first* use of a phrase can stop at its
    first match (Hyperscan SINGLEMATCH). ``buffer`` (what the matcher scans) adds the phonetic layer
    of each side right after it: agent, agent-phonetic, others, others-phonetic.
    Segment indices everywhere are transcript indices; positions are offsets in ``text``.
    """

    def __init__(self, transcript: Transcript, with_phonetic: bool = False) -> None:
        self.transcript = transcript
        self.segments: list[Segment] = transcript.segments
        n = len(self.segments)
        agent = [i for i, seg in enumerate(self.segments) if seg.role in AGENT_SIDE]
        others = [i for i, seg in enumerate(self.segments) if seg.role not in AGENT_SIDE]
        self.order = np.array(agent + others, dtype=np.int64)
        # A stray separator character inside a segment would split it: blank it (same length, same offsets).
        texts = [self.segments[i].text.replace(SEGMENT_BREAK, " ") for i in self.order.tolist()]
        self.norm = normalize(SEGMENT_BREAK.join(texts))
        self.text = self.norm.text
        lengths = np.fromiter((len(t) + 1 for t in texts), dtype=np.int64, count=n)
        starts_orig = np.concatenate(([0], np.cumsum(lengths)[:-1])) if n else np.zeros(0, np.int64)
        breaks = np.searchsorted(self.norm.offsets, starts_orig[1:] - 1)  # where each SEPARATOR landed
        self._k_starts = np.concatenate(([0], breaks + 1)) if n else np.zeros(0, np.int64)  # buffer order
        k_ends = np.concatenate((breaks, [len(self.text)])) if n else np.zeros(0, np.int64)
        rank = np.empty(n, dtype=np.int64)
        rank[self.order] = np.arange(n)
        self.orig_starts = starts_orig[rank]  # transcript-indexed from here on
        self.starts = self._k_starts[rank]
        self.ends = k_ends[rank]
        self.with_phonetic = with_phonetic
        self.phonetic_text = phonetic(self.norm) if with_phonetic else ""
        self._split = int(self._k_starts[len(agent)]) if 0 < len(agent) < n else len(self.text) + 1
        self._spans: dict[int, list[timing.WordSpan]] = {}
        self._scoped: dict[str, list[int]] = {}
        self._region_arrays: tuple[np.ndarray, ...] | None = None
        self.duration = transcript.duration or max((s.end for s in self.segments), default=0.0)

    def regions(self) -> list[tuple[int, int, bool]]:
        """``(text_start, text_end, phonetic)`` of each part of ``buffer``, in buffer order."""
        sides = [(0, min(self._split - 1, len(self.text))), (self._split, len(self.text))]
        sides = [(a, b) for a, b in sides if b > a] or [(0, 0)]
        if not self.with_phonetic:
            return [(0, len(self.text), False)]
        return [(a, b, phon) for a, b in sides for phon in (False, True)]

    @property
    def buffer(self) -> str:
        """What the matcher scans: each side's text then its phonetic layer, separated."""
        if not self.with_phonetic:
            return self.text
        layers = {False: self.text, True: self.phonetic_text}
        return SEPARATOR.join(layers[phon][a:b] for a, b, phon in self.regions())

    def buffer_byte_offsets(self) -> np.ndarray:
        """UTF-8 byte offset of every character of ``buffer`` (a phonetic layer has the same widths)."""
        codes = self.norm.codes
        if self.with_phonetic:
            sep = np.array([ord(SEPARATOR)], dtype=np.uint32)
            parts = [codes[a:b] for a, b, _ in self.regions()]
            codes = np.concatenate([x for part in parts for x in (part, sep)][:-1])
        return utf8_offsets(codes)

    def buffer_to_text(self, start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, ...]:
        """Buffer spans → (text start, text end, phonetic layer?, inside one region?)."""
        if not self.with_phonetic:
            return start, end, np.zeros(start.shape, bool), end <= len(self.text)
        if self._region_arrays is None:
            regions = self.regions()
            lengths = np.array([b - a for a, b, _ in regions], dtype=np.int64)
            bases = np.concatenate(([0], np.cumsum(lengths + 1)[:-1]))
            text_starts = np.array([a for a, _, _ in regions], dtype=np.int64)
            self._region_arrays = (bases, text_starts, lengths, np.array([p for _, _, p in regions], dtype=bool))
        bases, text_starts, lengths, phonetic_layer = self._region_arrays
        r = np.searchsorted(bases, start, side="right") - 1
        shift = text_starts[r] - bases[r]
        return start + shift, end + shift, phonetic_layer[r], end - bases[r] <= lengths[r]

    def seg_of(self, pos: int) -> int:
        return int(self.order[np.searchsorted(self._k_starts, pos, side="right") - 1])

    def segs_of(self, pos: np.ndarray) -> np.ndarray:
        """Transcript segment index of each text position (vectorised)."""
        k = np.searchsorted(self._k_starts, pos, side="right") - 1
        return self.order[np.maximum(k, 0)]

    def seg_text(self, seg: int) -> str:
        return self.text[int(self.starts[seg]) : int(self.ends[seg])]

    def role(self, seg: int) -> Role:
        return self.segments[seg].role

    def in_scope(self, seg: int, scope: str) -> bool:
        return self.segments[seg].role in SCOPES[scope]

    def scoped(self, scope: str) -> list[int]:
        """Transcript indices of the segments a rule of this scope looks at (cached)."""
        cached = self._scoped.get(scope)
        if cached is None:
            roles = SCOPES[scope]
            cached = self._scoped[scope] = [i for i, s in enumerate(self.segments) if s.role in roles]
        return cached

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
