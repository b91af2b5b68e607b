"""One multi-pattern matcher for every phrase and regex of a pack.

Hyperscan (one database; literals as bytes, regexes in UTF-8 mode) where it imports; otherwise an
Aho-Corasick automaton for the literals plus Python ``re`` for the regexes. Both return an int64
array of rows ``(pattern_id, start, end)`` in *character* offsets of the scanned string.

Hyperscan's start-of-match tracking (SOM_LEFTMOST) made the database 3-4x slower on call text, so
it is off: a literal starts ``len(literal)`` before its end; a regex's leftmost start is found by
Python ``re`` on the few characters before the end (regex hits are rare and never cross a line),
except for patterns marked ``needs_start=False`` (reported as ``end - 1``). Patterns marked
``first_only`` stop at their first match (SINGLEMATCH); the Aho-Corasick path reports them all.
"""

from __future__ import annotations

import re
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from callqc.rules.regexcheck import REGEX_FLAGS, sre_parse

_EMPTY = np.zeros((0, 3), dtype=np.int64)
_LOOKBACK = 64  # characters searched back for the start of an unbounded regex match


@dataclass(frozen=True)
class Pattern:
    """A normalised literal or a (folded) regex; ``id`` is its index in the matcher."""

    id: int
    expr: str
    literal: bool
    first_only: bool = False  # only the first match in the buffer is needed (Hyperscan SINGLEMATCH)
    needs_start: bool = True  # False: callers only use the end (start is reported as end - 1)


class MatcherError(Exception):
    """A pattern the back-end refuses; ``pattern_id`` says which (-1: none in particular)."""

    def __init__(self, pattern_id: int, reason: str) -> None:
        super().__init__(f"pattern {pattern_id}: {reason}")
        self.pattern_id = pattern_id
        self.reason = reason


class Matcher(ABC):
    backend: str

    @abstractmethod
    def scan(self, text: str, byte_at: np.ndarray | None = None) -> np.ndarray:
        """All matches of all patterns in ``text``: int64 rows ``(pattern_id, start, end)``.

        ``byte_at`` (optional, from ``utf8_offsets``) saves recomputing character offsets.
        """


_UTF8_WIDTH = np.ones(0x110000, dtype=np.uint8)
_UTF8_WIDTH[0x80:] = 2
_UTF8_WIDTH[0x800:] = 3
_UTF8_WIDTH[0x10000:] = 4


def utf8_offsets(codes: np.ndarray) -> np.ndarray:
    """Byte offset of each character (and of the end) of the string with these code points."""
    byte_at = np.zeros(codes.size + 1, dtype=np.int64)
    np.cumsum(_UTF8_WIDTH[codes], dtype=np.int64, out=byte_at[1:])
    return byte_at


@lru_cache(maxsize=8)
def _compiled_database(exprs: tuple[bytes, ...], ids: tuple[int, ...], flags: tuple[int, ...]) -> object:
    """Compile once per distinct pattern set (a reload of the same pack reuses it; scans only read it)."""
    import hyperscan as hs

    db = hs.Database(mode=hs.HS_MODE_BLOCK)
    db.compile(expressions=list(exprs), ids=list(ids), elements=len(exprs), flags=list(flags))
    return db


def hyperscan_available() -> bool:
    try:
        import hyperscan  # noqa: F401
    except ImportError:
        return False
    return True


def _compile_regex(pattern: Pattern) -> re.Pattern[str]:
    try:
        return re.compile(pattern.expr, REGEX_FLAGS)
    except re.error as exc:
        raise MatcherError(pattern.id, str(exc)) from None


class HyperscanMatcher(Matcher):
    backend = "hyperscan"

    def __init__(self, patterns: list[Pattern]) -> None:
        import hyperscan as hs

        self._hs = hs
        self._db = None
        self._local = threading.local()
        size = max((p.id for p in patterns), default=-1) + 1
        self._literal_chars = np.ones(size, dtype=np.int64)  # regexes: 1 (start unknown: end - 1)
        self._regex_start: dict[int, tuple[re.Pattern[str], int]] = {}
        for p in patterns:
            if p.literal:
                self._literal_chars[p.id] = len(p.expr)
            elif p.needs_start:
                widest = sre_parse.parse(p.expr, REGEX_FLAGS).getwidth()[1]
                back = widest if widest < _LOOKBACK else _LOOKBACK
                self._regex_start[p.id] = (re.compile(f"(?:{p.expr})\\Z", REGEX_FLAGS), back)
        self._needs_recovery = np.zeros(size, dtype=bool)
        self._needs_recovery[list(self._regex_start)] = True
        if not patterns:
            return
        exprs = [(re.escape(p.expr) if p.literal else p.expr).encode("utf-8") for p in patterns]
        flags = tuple(self._flags(p) for p in patterns)
        try:
            self._db = _compiled_database(tuple(exprs), tuple(p.id for p in patterns), flags)
        except hs.error as exc:
            self._raise_culprit(patterns, exprs, exc)

    def _flags(self, pattern: Pattern) -> int:
        hs = self._hs
        single = hs.HS_FLAG_SINGLEMATCH if pattern.first_only else 0
        if pattern.literal:  # valid UTF-8 bytes only match at character starts: no UTF-8 mode needed
            return single
        return hs.HS_FLAG_UTF8 | hs.HS_FLAG_CASELESS | single

    def _raise_culprit(self, patterns: list[Pattern], exprs: list[bytes], exc: Exception) -> None:
        """Hyperscan does not say which expression failed: compile them one by one to find it."""
        for pattern, expr in zip(patterns, exprs, strict=True):
            single = self._hs.Database(mode=self._hs.HS_MODE_BLOCK)
            try:
                single.compile(expressions=[expr], ids=[0], elements=1, flags=self._flags(pattern))
            except self._hs.error as one:
                raise MatcherError(pattern.id, str(one)) from None
        raise MatcherError(-1, f"the combined database does not compile: {exc}")

    def _scratch(self) -> object:
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._hs.Scratch(self._db)
            self._local.scratch = scratch
        return scratch

    def scan(self, text: str, byte_at: np.ndarray | None = None) -> np.ndarray:
        if self._db is None or not text:
            return _EMPTY
        data = text.encode("utf-8")
        raw: list[int] = []
        add = raw.append

        def on_match(pid: int, _start: int, end: int, _flags: int, _ctx: object) -> None:
            add(pid)
            add(end)

        self._db.scan(data, match_event_handler=on_match, scratch=self._scratch())
        if not raw:
            return _EMPTY
        hits = np.array(raw, dtype=np.int64).reshape(-1, 2)
        out = np.empty((hits.shape[0], 3), dtype=np.int64)
        pid = out[:, 0] = hits[:, 0]
        if len(data) == len(text):  # ASCII: bytes are characters
            out[:, 2] = hits[:, 1]
        else:
            if byte_at is None:
                byte_at = utf8_offsets(np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32))
            out[:, 2] = np.searchsorted(byte_at, hits[:, 1])
        out[:, 1] = out[:, 2] - self._literal_chars[pid]  # a regex gets end - 1 until its start is found
        if self._regex_start:
            starts = self._regex_start
            for row in np.flatnonzero(self._needs_recovery[pid]).tolist():
                out[row, 1] = self._regex_start_of(text, starts[raw[2 * row]], int(out[row, 2]))
        return out

    @staticmethod
    def _regex_start_of(text: str, found: tuple[re.Pattern[str], int], end: int) -> int:
        """Leftmost start of a regex match ending at ``end`` (within its line and the regex's width)."""
        rx, back = found
        lo = max(0, end - back)
        nl = text.rfind("\n", lo, end)
        lo = nl + 1 if nl >= 0 else lo
        m = rx.search(text, lo, end)
        return m.start() if m else end


class AhoCorasickMatcher(Matcher):
    backend = "aho-corasick"

    def __init__(self, patterns: list[Pattern]) -> None:
        import ahocorasick

        self._automaton: ahocorasick.Automaton | None = None
        literals: dict[str, list[tuple[int, int]]] = {}
        for p in patterns:
            if p.literal:
                literals.setdefault(p.expr, []).append((p.id, len(p.expr)))
        if literals:
            automaton = ahocorasick.Automaton()
            for key, value in literals.items():
                automaton.add_word(key, value)
            automaton.make_automaton()
            self._automaton = automaton
        self._regexes = [(p.id, _compile_regex(p)) for p in patterns if not p.literal]

    def scan(self, text: str, byte_at: np.ndarray | None = None) -> np.ndarray:
        hits: list[tuple[int, int, int]] = []
        if self._automaton is not None and text:
            for end, value in self._automaton.iter(text):
                for pid, length in value:
                    hits.append((pid, end + 1 - length, end + 1))
        for pid, rx in self._regexes:
            hits.extend((pid, m.start(), m.end()) for m in rx.finditer(text))
        return np.asarray(hits, dtype=np.int64) if hits else _EMPTY


def build_matcher(patterns: list[Pattern], backend: str = "auto") -> Matcher:
    """``backend``: ``auto`` (Hyperscan when it imports), ``hyperscan`` or ``aho-corasick``."""
    if backend == "auto":
        backend = "hyperscan" if hyperscan_available() else "aho-corasick"
    if backend == "hyperscan":
        return HyperscanMatcher(patterns)
    if backend == "aho-corasick":
        return AhoCorasickMatcher(patterns)
    raise ValueError(f"unknown matcher backend {backend!r}")
