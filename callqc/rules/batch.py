"""Many calls' normalised text laid out for one scan, and the scan's hits mapped back to calls.

``BatchText`` joins the calls' texts (a separator no pattern crosses between them) into the plain
layer and, when the pack has phonetic patterns, their phonetic text (agent side only when no phonetic
pattern feeds a rule that looks further) into the phonetic layer. ``BatchText.recall`` turns the
matcher's rows into validated hits per call, all vectorised: the right layer, inside one segment,
English word boundaries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from callqc.rules.compiler import PatternInfo
from callqc.rules.context import CallText
from callqc.rules.matcher import PHONETIC, PLAIN, Layer
from callqc.textnorm import SEPARATOR

_NONE = np.zeros(0, dtype=np.int64)


def _bases(lengths: np.ndarray) -> np.ndarray:
    """Start of each part in a SEPARATOR-joined string, plus one past the end."""
    out = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths + 1, out=out[1:])
    return out


@dataclass(frozen=True)
class PatternFlags:
    """Per-pattern arrays the validation needs (index: pattern id)."""

    phonetic: np.ndarray
    bound_left: np.ndarray
    bound_right: np.ndarray
    end_only: np.ndarray
    target_ptr: np.ndarray  # rules fed by pattern p: target_rule[target_ptr[p]:target_ptr[p + 1]]
    target_rule: np.ndarray

    @classmethod
    def build(cls, infos: list[PatternInfo]) -> PatternFlags:
        def flags(values: list[bool]) -> np.ndarray:
            return np.array(values or [False], dtype=bool)

        counts = np.array([len(i.targets) for i in infos] or [0], dtype=np.int64)
        return cls(
            phonetic=flags([i.phonetic for i in infos]),
            bound_left=flags([i.bound_left for i in infos]),
            bound_right=flags([i.bound_right for i in infos]),
            end_only=flags([not i.pattern.needs_start for i in infos]),
            target_ptr=np.concatenate(([0], np.cumsum(counts))),
            target_rule=np.array([t.rule for i in infos for t in i.targets], dtype=np.int64),
        )


@dataclass(frozen=True)
class Recall:
    """Validated hits of a batch, sorted by call: one row per (pattern, place) in call-text offsets."""

    call: np.ndarray
    pattern: np.ndarray
    seg: np.ndarray
    start: np.ndarray
    end: np.ndarray
    phonetic: np.ndarray  # a phonetic pattern (a homophone, until checked against the text)
    bounds: np.ndarray  # rows of call k: bounds[k]:bounds[k + 1]

    def __len__(self) -> int:
        return len(self.pattern)

    def rows_of(self, k: int) -> tuple[list[int], ...]:
        """Columns ``(pattern, seg, start, end, phonetic)`` of call ``k``'s hits, as lists."""
        a, b = int(self.bounds[k]), int(self.bounds[k + 1])
        return tuple(col[a:b].tolist() for col in (self.pattern, self.seg, self.start, self.end, self.phonetic))

    def per_rule(self, flags: PatternFlags) -> tuple[np.ndarray, np.ndarray]:
        """``(hit row, rule index)`` for every rule each hit feeds (vectorised)."""
        lo, hi = flags.target_ptr[self.pattern], flags.target_ptr[self.pattern + 1]
        rows = np.repeat(np.arange(len(self.pattern)), hi - lo)
        offsets = np.arange(len(rows)) - np.repeat(np.cumsum(hi - lo) - (hi - lo), hi - lo)
        return rows, flags.target_rule[np.repeat(lo, hi - lo) + offsets]


class BatchText:
    """The layers a batch of calls is scanned in, and the way back from layer offsets to calls."""

    def __init__(self, calls: Sequence[CallText], phonetic: str = "none") -> None:
        """``phonetic``: ``none``, ``agent`` (the agent side's phonetic text) or ``all``."""
        self.calls = calls
        n = len(calls)
        self.lengths = np.fromiter((len(c.text) for c in calls), dtype=np.int64, count=n)
        self.bases = _bases(self.lengths)
        self.plain = Layer(SEPARATOR.join(c.text for c in calls))
        agent = np.fromiter((c.agent_chars for c in calls), dtype=np.int64, count=n)
        self.phon: Layer | None = None
        self.phon_lengths, self.phon_bases = self.lengths, self.bases
        if phonetic == "all":
            self.phon = Layer(SEPARATOR.join(c.phonetic_text for c in calls))
        elif phonetic == "agent":
            self.phon = Layer(SEPARATOR.join(c.phonetic_text[: c.agent_chars] for c in calls))
            self.phon_lengths, self.phon_bases = agent, _bases(agent)
        p0 = self.plain.bytes_at(self.bases[:-1])
        q0 = self.phon.bytes_at(self.phon_bases[:-1]) if self.phon is not None else np.zeros(n, dtype=np.int64)
        # (plain byte start, phonetic byte start, byte length) of each call's agent side
        self.agent = np.stack([p0, q0, self.plain.bytes_at(self.bases[:-1] + agent) - p0], axis=1)

    def _segments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every segment of the batch: start and end in the plain layer, transcript index."""
        calls, bases = self.calls, self.bases.tolist()
        if not calls:
            return _NONE, _NONE, _NONE
        starts = np.concatenate([c.kstarts + b for c, b in zip(calls, bases, strict=False)])
        ends = np.concatenate([c.kends + b for c, b in zip(calls, bases, strict=False)])
        return starts, ends, np.concatenate([c.order for c in calls])

    def recall(self, raw: np.ndarray, flags: PatternFlags) -> Recall:
        """Matcher rows ``(pattern, layer, start, end)`` → validated hits per call."""
        n = len(self.calls)
        if not len(raw):
            return Recall(_NONE, _NONE, _NONE, _NONE, _NONE, np.zeros(0, bool), np.zeros(n + 1, dtype=np.int64))
        pid, layer, start, end = raw[:, 0], raw[:, 1], raw[:, 2], raw[:, 3]
        in_phon = layer == PHONETIC
        call = np.empty(len(raw), dtype=np.int64)
        local_start, local_end = start.copy(), end.copy()
        inside = np.ones(len(raw), dtype=bool)
        for number, bases, lengths in ((PLAIN, self.bases, self.lengths), (PHONETIC, self.phon_bases, self.phon_lengths)):
            rows = layer == number
            if not rows.any():
                continue
            k = np.searchsorted(bases, start[rows], side="right") - 1
            call[rows] = k
            local_start[rows] -= bases[k]
            local_end[rows] -= bases[k]
            inside[rows] = local_end[rows] <= lengths[k]
        local_start = np.where(flags.end_only[pid], local_end - 1, local_start)  # same for every back-end
        phon = flags.phonetic[pid]
        # plain patterns only count in plain text; phonetic ones in either layer
        ok = inside & (local_end > local_start) & (local_start >= 0) & (phon | ~in_phon)
        seg_starts, seg_ends, seg_order = self._segments()
        g_start, g_end = self.bases[call] + local_start, self.bases[call] + local_end  # plain-layer offsets
        k = np.maximum(np.searchsorted(seg_starts, g_start, side="right") - 1, 0)
        ok &= g_end <= seg_ends[k]
        bounded = np.flatnonzero(ok & (flags.bound_left[pid] | flags.bound_right[pid]))
        if len(bounded):
            ok[bounded] &= ~self._touches_word(pid[bounded], g_start[bounded], g_end[bounded], flags)
        keep = np.flatnonzero(ok)
        keep = keep[np.argsort(call[keep], kind="stable")]
        call = call[keep]
        return Recall(
            call=call,
            pattern=pid[keep],
            seg=seg_order[k[keep]],
            start=local_start[keep],
            end=local_end[keep],
            phonetic=phon[keep],
            bounds=np.searchsorted(call, np.arange(n + 1)),
        )

    def _touches_word(self, pid: np.ndarray, start: np.ndarray, end: np.ndarray, flags: PatternFlags) -> np.ndarray:
        """An English phrase glued to a letter or digit (``sb`` inside ``usb``) is no match."""
        text = self.plain.text
        last = len(text)

        def alnum(positions: np.ndarray) -> np.ndarray:
            return np.fromiter(
                (0 <= i < last and text[i].isascii() and text[i].isalnum() for i in positions.tolist()),
                dtype=bool,
                count=len(positions),
            )

        return (flags.bound_left[pid] & alnum(start - 1)) | (flags.bound_right[pid] & alnum(end))
