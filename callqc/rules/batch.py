"""Many calls' normalised text laid out for one scan, and the scan's hits mapped back to calls.

``BatchText`` joins the calls' texts (a separator no pattern crosses between them) into the plain
layer and, when the pack has phonetic patterns, their phonetic text into the phonetic layer.
``BatchText.recall`` turns the matcher's rows into validated hits per call, all vectorised: the right
layer, inside one segment, English word boundaries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from callqc.rules.compiler import PatternInfo
from callqc.rules.context import CallText
from callqc.rules.layers import Layer
from callqc.rules.matcher import PLAIN
from callqc.textnorm import SEPARATOR

_NONE = np.zeros(0, dtype=np.int64)
_FEW = 4  # up to this many calls, per-call Python beats a few more numpy calls over the batch
_ALNUM = np.zeros(256, dtype=bool)  # ASCII letters and digits, by byte
_ALNUM[[ord(c) for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"]] = True


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
    byte_len: np.ndarray  # UTF-8 length of a literal (word-boundary checks)
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
            byte_len=np.array([len(i.pattern.expr.encode("utf-8")) for i in infos] or [0], dtype=np.int64),
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
        lo = flags.target_ptr[self.pattern]
        counts = flags.target_ptr[self.pattern + 1] - lo
        if not len(lo) or counts.max() == 1:  # every hit feeds one rule
            return np.arange(len(lo)), flags.target_rule[lo]
        rows = np.repeat(np.arange(len(lo)), counts)
        first_out = np.cumsum(counts) - counts  # where each hit's rules start in the output
        return rows, flags.target_rule[np.arange(len(rows)) + np.repeat(lo - first_out, counts)]


class BatchText:
    """The layers a batch of calls is scanned in, and the way back from layer offsets to calls.

    Both layers have one layout: call texts joined by SEPARATOR, which also ends every segment, so
    the separators cut the layers into *slots*, one per segment (one for a call without any).
    """

    def __init__(self, calls: Sequence[CallText], phonetic: bool = False) -> None:
        self.calls = calls
        self.plain = Layer(SEPARATOR.join(c.text for c in calls))
        self.phon = Layer(SEPARATOR.join(c.phonetic_text for c in calls), like=self.plain) if phonetic else None
        if self.phon is not None and len(self.phon.data) != len(self.plain.data):  # pragma: no cover - a bug
            raise ValueError("the phonetic layer must keep every character's UTF-8 width")

    @cached_property
    def bases(self) -> np.ndarray:
        """Character offset of each call in the layers, plus one past the end."""
        return _bases(np.array([len(c.text) for c in self.calls], dtype=np.int64))

    @cached_property
    def _slots(self) -> np.ndarray:
        return np.array([len(c.segments) or 1 for c in self.calls], dtype=np.int64)

    @cached_property
    def _slot_chars(self) -> tuple[np.ndarray, np.ndarray]:
        """Character start and end of every slot (computed only when there is something to place)."""
        if len(self.calls) <= _FEW:  # a few calls: their own segment offsets are cheaper than a search
            bases = self.bases.tolist()
            starts = [c.kstarts + b if len(c.kstarts) else [b] for c, b in zip(self.calls, bases, strict=False)]
            ends = [c.kends + b if len(c.kends) else [b] for c, b in zip(self.calls, bases, strict=False)]
            return np.concatenate(starts), np.concatenate(ends)
        breaks = self.plain.chars(self.plain.separators)
        return np.concatenate(([0], breaks + 1)), np.concatenate((breaks, [len(self.plain.text)]))

    @cached_property
    def agent(self) -> np.ndarray:
        """``(byte start, byte length)`` of each call's agent side, the same in both layers."""
        n = len(self.calls)
        if n <= _FEW:
            rows, start = [], 0
            for c in self.calls:
                rows.append((start, len(c.text[: c.agent_chars].encode())))
                start += len(c.text.encode()) + 1
            return np.array(rows, dtype=np.int64).reshape(-1, 2)
        first_slot = np.concatenate(([0], np.cumsum(self._slots)[:-1]))
        agent = np.array([c.agent_segments for c in self.calls], dtype=np.int64)
        ends = np.append(self.plain.separators, len(self.plain.data))  # byte end of every slot
        p0 = np.where(first_slot > 0, ends[first_slot - 1] + 1, 0)
        return np.stack([p0, np.where(agent > 0, ends[first_slot + np.maximum(agent - 1, 0)] - p0, 0)], axis=1)

    def _slot_order(self) -> np.ndarray:
        """Transcript segment index of every slot (-1: the empty slot of a call without segments)."""
        empty = np.array([-1], dtype=np.int64)
        return np.concatenate([c.order if len(c.order) else empty for c in self.calls])

    def recall(self, raw: np.ndarray, flags: PatternFlags) -> Recall:
        """Matcher rows ``(pattern, layer, start, end, end_byte)`` → validated hits per call."""
        n = len(self.calls)
        if not len(raw):
            return Recall(_NONE, _NONE, _NONE, _NONE, _NONE, np.zeros(0, bool), np.zeros(n + 1, dtype=np.int64))
        pid, layer, start, end, end_byte = raw.T
        phon = flags.phonetic[pid]
        start = np.where(flags.end_only[pid], end - 1, start)  # same for every back-end
        # plain patterns only count in plain text; phonetic ones in either layer
        ok = (end > start) & (phon | (layer == PLAIN))
        slot_starts, slot_ends = self._slot_chars
        slot = np.maximum(np.searchsorted(slot_starts, start, side="right") - 1, 0)
        ok &= end <= slot_ends[slot]  # inside one segment
        bounded = np.flatnonzero(ok & (flags.bound_left[pid] | flags.bound_right[pid]))
        if len(bounded):
            b = pid[bounded]
            ok[bounded] &= ~self._touches_word(b, end_byte[bounded] - flags.byte_len[b], end_byte[bounded], flags)
        keep = np.flatnonzero(ok)
        if n == 1:  # the common single-call case: nothing to sort
            call, base = np.zeros(len(keep), dtype=np.int64), 0
        else:
            call = np.repeat(np.arange(n), self._slots)[slot[keep]]
            order = np.argsort(call, kind="stable")
            keep, call = keep[order], call[order]
            base = self.bases[call]
        return Recall(
            call=call,
            pattern=pid[keep],
            seg=self._slot_order()[slot[keep]],
            start=start[keep] - base,
            end=end[keep] - base,
            phonetic=phon[keep],
            bounds=np.array([0, len(keep)]) if n == 1 else np.searchsorted(call, np.arange(n + 1)),
        )

    def _touches_word(self, pid: np.ndarray, start: np.ndarray, end: np.ndarray, flags: PatternFlags) -> np.ndarray:
        """An English phrase glued to a letter or digit (``sb`` inside ``usb``) is no match (byte offsets)."""
        data = np.frombuffer(self.plain.data, dtype=np.uint8)
        before = np.where(start > 0, _ALNUM[data[np.clip(start - 1, 0, len(data) - 1)]], False)
        after = np.where(end < len(data), _ALNUM[data[np.clip(end, 0, len(data) - 1)]], False)
        return (flags.bound_left[pid] & before) | (flags.bound_right[pid] & after)
