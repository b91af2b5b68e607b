"""One call's text, normalised once: segment boundaries, evidence and audio times of spans."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from callqc.models import Role, Segment, Transcript
from callqc.rules import timing
from callqc.textnorm import SEGMENT_BREAK, normalize, phonetic

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
    """A call's segments, normalised in one pass.

    ``text`` holds the agent-side segments (agent, unknown) in time order, then the other segments
    in time order, each segment followed by a separator no pattern crosses. Agent-side text comes
    first so that a pattern that only needs the agent's *first* use of a phrase can stop at its
    first match (Hyperscan SINGLEMATCH over ``text[:agent_chars]``). ``phonetic_text`` is the same
    text with every Chinese character folded to its homophone class (same offsets).
    Segment indices everywhere are transcript indices; positions are offsets in ``text``.
    """

    def __init__(self, transcript: Transcript, with_phonetic: bool = False) -> None:
        self.transcript = transcript
        self.segments: list[Segment] = transcript.segments
        n = len(self.segments)
        agent = [i for i, seg in enumerate(self.segments) if seg.role in AGENT_SIDE]
        others = [i for i, seg in enumerate(self.segments) if seg.role not in AGENT_SIDE]
        self.order = np.array(agent + others, dtype=np.int64)  # transcript index of each segment in text order
        # A stray separator character inside a segment would split it: blank it (same length, same offsets).
        texts = [self.segments[i].text.replace(SEGMENT_BREAK, " ") for i in self.order.tolist()]
        self.norm = normalize(SEGMENT_BREAK.join(texts))
        self.text = self.norm.text
        lengths = np.fromiter((len(t) + 1 for t in texts), dtype=np.int64, count=n)
        starts_orig = np.concatenate(([0], np.cumsum(lengths)[:-1])) if n else np.zeros(0, np.int64)
        breaks = np.searchsorted(self.norm.offsets, starts_orig[1:] - 1)  # where each SEPARATOR landed
        self.kstarts = np.concatenate(([0], breaks + 1)) if n else np.zeros(0, np.int64)  # text order
        self.kends = np.concatenate((breaks, [len(self.text)])) if n else np.zeros(0, np.int64)
        rank = np.empty(n, dtype=np.int64)
        rank[self.order] = np.arange(n)
        self.orig_starts = starts_orig[rank]  # transcript-indexed from here on
        self.starts = self.kstarts[rank]
        self.ends = self.kends[rank]
        self.with_phonetic = with_phonetic
        self.phonetic_text = phonetic(self.norm) if with_phonetic else ""
        self.agent_segments = len(agent)  # text[:agent_chars] is the agent side
        self.agent_chars = int(self.kends[len(agent) - 1]) if agent else 0
        self._spans: dict[int, list[timing.WordSpan]] = {}
        self._scoped: dict[str, list[int]] = {}
        self.duration = transcript.duration or max((s.end for s in self.segments), default=0.0)

    def seg_of(self, pos: int) -> int:
        return int(self.order[np.searchsorted(self.kstarts, pos, side="right") - 1])

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
