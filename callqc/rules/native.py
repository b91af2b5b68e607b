"""The recall scan in C (every Hyperscan database of a pack and the hit validation in one native call),
and the choice of matcher back-end.

``callqc/rules/_recall.c`` is built against the system Hyperscan (Debian's ``libhyperscan-dev``) when
the package is installed; without it the engine falls back to the Python binding (``matcher.py``).
The Python binding calls back into Python for every match, and its per-call scans and the numpy
validation around them cost three times the scan itself; here Python only decides which pattern goes
into which database, and the C core lays out the batch (UTF-8, with an SSE4.1 encoder), scans,
validates (segment, word boundaries, first agent-side use) and groups hits by call.

Databases (literals as bytes, regexes in UTF-8 + caseless mode):

* ``plain``: the plain patterns, over the plain layer;
* ``phon``: the phonetic patterns, over the phonetic layer;
* ``narrow``: plain regexes that run faster over the one-byte-per-character layer (layers.py);
* ``first``: ``first_only`` patterns with SINGLEMATCH, one vectored scan per call over its agent side
  (plain part, then phonetic part), so a phrase said fifty times costs one match;
* per regex whose start is needed, the regex reversed (reverse.py) and anchored, run over the
  characters before each of its hits read backwards: its longest match is the leftmost start. Where
  Hyperscan refuses the reversed form, a SOM_LEFTMOST database over the same characters; where it
  refuses that too, Python ``re`` (start-of-match tracking over the whole text was 3-4x slower).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from callqc.rules.batch import PatternFlags, Recall
from callqc.rules.context import CallText
from callqc.rules.layers import NarrowAlphabet
from callqc.rules.matcher import (
    AhoCorasickMatcher,
    HyperscanMatcher,
    Matcher,
    MatcherError,
    Pattern,
    hyperscan_available,
    regex_start_of,
    regex_start_pattern,
)
from callqc.rules.reverse import reverse_regex

try:
    from callqc.rules import _recall
except ImportError:  # built only where libhyperscan-dev was installed
    _recall = None

_PHONETIC, _BOUND_LEFT, _BOUND_RIGHT, _END_ONLY, _FIRST_ONLY, _REVERSED = 1, 2, 4, 8, 16, 32  # as in _recall.c


def native_available() -> bool:
    return _recall is not None


@lru_cache(maxsize=512)  # a pack has a few scan databases and one start database per regex
def _database(
    exprs: tuple[bytes, ...], ids: tuple[int, ...], flags: tuple[int, ...], som: bool = False, vectored: bool = False
) -> object:
    """Compile once per distinct pattern set (a reload of the same pack reuses it; cores only read it)."""
    assert _recall is not None
    return _recall.Database(list(exprs), list(ids), list(flags), som, vectored)


class NativeMatcher:
    """Recall of a batch of calls by the C core; ``recall(calls)`` returns what ``BatchText.recall`` does."""

    backend = "hyperscan-native"

    def __init__(self, patterns: list[Pattern], flags: PatternFlags) -> None:
        if _recall is None:
            raise RuntimeError("the native recall core is not built (install libhyperscan-dev, then make setup)")
        self._flags = flags
        caseless_utf8 = _recall.FLAG_UTF8 | _recall.FLAG_CASELESS
        rest = [p for p in patterns if not p.first_only]
        plain = [p for p in rest if not p.phonetic]
        narrow = NarrowAlphabet({p.id: p.expr for p in plain if not p.literal})
        narrow_db = None
        if narrow.exprs:
            try:
                narrow_db = _database(
                    tuple(narrow.exprs.values()), tuple(narrow.exprs), (_recall.FLAG_CASELESS,) * len(narrow.exprs)
                )
            except _recall.CompileError:  # a construct the rewrite got wrong: keep them all in UTF-8 mode
                narrow = NarrowAlphabet({})
        plain_db = self._compile([p for p in plain if p.id not in narrow.exprs], caseless_utf8)
        phon_db = self._compile([p for p in rest if p.phonetic], caseless_utf8)
        first = [p for p in patterns if p.first_only]
        first_db = self._compile(first, caseless_utf8, _recall.FLAG_SINGLEMATCH, vectored=True)
        size = max((p.id for p in patterns), default=-1) + 1
        starts: list[object | None] = [None] * size  # per regex whose start is needed: how to find it
        reversed_ids: set[int] = set()
        back = np.zeros(size, dtype=np.int64)
        self._python_start: dict[int, tuple[re.Pattern[str], int]] = {}  # no Hyperscan database for these
        for p in patterns:
            if p.literal or not p.needs_start:
                continue
            found = regex_start_pattern(p.expr)
            back[p.id] = found[1]
            in_narrow = p.id in narrow.exprs
            flag = _recall.FLAG_CASELESS if in_narrow else caseless_utf8
            forward = narrow.exprs[p.id].decode("ascii") if in_narrow else p.expr
            starts[p.id], backwards = self._start_database(p.id, forward, flag, in_narrow)
            if backwards:
                reversed_ids.add(p.id)
            elif starts[p.id] is None:
                self._python_start[p.id] = found
        self._python_start_mask = np.zeros(max(size, 1), dtype=bool)
        self._python_start_mask[list(self._python_start)] = True
        lit_chars = np.ones(size, dtype=np.int64)
        pattern_flags = np.zeros(size, dtype=np.uint8)
        for p in patterns:
            if p.literal:
                lit_chars[p.id] = len(p.expr)
            pattern_flags[p.id] = (
                _PHONETIC * p.phonetic
                | _BOUND_LEFT * bool(flags.bound_left[p.id])
                | _BOUND_RIGHT * bool(flags.bound_right[p.id])
                | _END_ONLY * (not p.needs_start)
                | _FIRST_ONLY * p.first_only
                | _REVERSED * (p.id in reversed_ids)
            )
        self._has_phonetic = any(p.phonetic for p in patterns)
        self._core = _recall.Core(
            plain_db,
            phon_db,
            narrow_db,
            first_db,
            starts,
            lit_chars.tobytes(),
            flags.byte_len[:size].astype(np.int64).tobytes() if size else b"",
            back.tobytes(),
            pattern_flags.tobytes(),
            narrow.table.tobytes() if narrow_db is not None else None,
        )

    @staticmethod
    def _start_database(pid: int, forward: str, flag: int, narrow: bool) -> tuple[object | None, bool]:
        """How a regex's starts are found: ``(database, reversed)``; ``(None, False)``: by Python ``re``.

        The regex reversed and anchored where Hyperscan takes it, else a start-of-match database (both
        run only over the characters before a hit's end)."""
        backward = reverse_regex(forward, narrow=narrow)
        if backward is not None:
            try:
                return _database((f"^(?:{backward})".encode(),), (pid,), (flag,)), True
            except _recall.CompileError:  # type: ignore[union-attr]
                pass
        try:
            return _database((forward.encode(),), (pid,), (flag,), True), False
        except _recall.CompileError:  # type: ignore[union-attr]
            return None, False

    @staticmethod
    def _compile(patterns: list[Pattern], regex_flags: int, extra: int = 0, vectored: bool = False) -> object | None:
        if not patterns:
            return None
        exprs = tuple(p.expr.encode("utf-8") if not p.literal else _escaped(p.expr) for p in patterns)
        flags = tuple((0 if p.literal else regex_flags) | extra for p in patterns)
        try:
            return _database(exprs, tuple(p.id for p in patterns), flags, vectored=vectored)
        except _recall.CompileError as exc:  # type: ignore[union-attr]
            index, reason = exc.args
            raise MatcherError(patterns[index].id if index >= 0 else -1, reason) from None

    def recall(self, calls: Sequence[CallText]) -> Recall:
        """One native scan of a batch of normalised calls → validated candidate hits per call."""
        n = len(calls)
        phons = [c.phonetic_text for c in calls] if self._has_phonetic else None
        agent = np.fromiter((c.agent_chars for c in calls), dtype=np.int64, count=n)
        columns = self._core.recall([c.text for c in calls], phons, agent.tobytes(), [c.order for c in calls])
        call, pid, seg, start, end, layer = (np.frombuffer(col, dtype=np.int64) for col in columns)
        if self._python_start and len(pid):
            call, pid, seg, start, end = self._python_starts(calls, call, pid, seg, start, end, layer)
        return Recall(
            call=call,
            pattern=pid,
            seg=seg,
            start=start,
            end=end,
            phonetic=self._flags.phonetic[pid],
            bounds=np.searchsorted(call, np.arange(n + 1)),
        )

    def _python_starts(self, calls: Sequence[CallText], *cols: np.ndarray) -> tuple[np.ndarray, ...]:
        """Starts of regex hits Hyperscan has no start database for, found by Python ``re``."""
        call, pid, seg, start, end, layer = cols
        start = start.copy()
        for row in np.flatnonzero(self._python_start_mask[pid]).tolist():
            c = calls[int(call[row])]
            text = c.phonetic_text if layer[row] == 1 else c.text
            start[row] = regex_start_of(text, self._python_start[int(pid[row])], int(end[row]))
        keep = end > start
        return call[keep], pid[keep], seg[keep], start[keep], end[keep]


def _escaped(literal: str) -> bytes:
    return re.escape(literal).encode("utf-8")


BACKENDS = ("auto", NativeMatcher.backend, HyperscanMatcher.backend, AhoCorasickMatcher.backend)


def build_matcher(patterns: list[Pattern], backend: str, flags: PatternFlags) -> Matcher | NativeMatcher:
    """``backend``: one of ``BACKENDS``; ``auto`` takes the first that is installed, in that order."""
    if backend == "auto":
        if native_available():
            backend = NativeMatcher.backend
        else:
            backend = HyperscanMatcher.backend if hyperscan_available() else AhoCorasickMatcher.backend
    if backend == NativeMatcher.backend:
        return NativeMatcher(patterns, flags)
    if backend == HyperscanMatcher.backend:
        return HyperscanMatcher(patterns)
    if backend == AhoCorasickMatcher.backend:
        return AhoCorasickMatcher(patterns)
    raise ValueError(f"unknown matcher backend {backend!r}")
