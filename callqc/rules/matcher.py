"""One multi-pattern matcher for every phrase and regex of a pack.

Hyperscan (one database, UTF-8, leftmost start of match) where it imports; otherwise an
Aho-Corasick automaton for the literals plus Python ``re`` for the regexes. Both report
``(pattern_id, start, end)`` in *character* offsets of the scanned string.
"""

from __future__ import annotations

import re
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from callqc.rules.regexcheck import REGEX_FLAGS

Hit = tuple[int, int, int]  # pattern id, start, end (characters)


@dataclass(frozen=True)
class Pattern:
    """A normalised literal or a (folded) regex; ``id`` is its index in the matcher."""

    id: int
    expr: str
    literal: bool


class MatcherError(Exception):
    """A pattern the back-end refuses; ``pattern_id`` says which."""

    def __init__(self, pattern_id: int, reason: str) -> None:
        super().__init__(f"pattern {pattern_id}: {reason}")
        self.pattern_id = pattern_id
        self.reason = reason


class Matcher(ABC):
    backend: str

    @abstractmethod
    def scan(self, text: str) -> list[Hit]:
        """All matches of all patterns in ``text``."""


def hyperscan_available() -> bool:
    try:
        import hyperscan  # noqa: F401
    except ImportError:
        return False
    return True


class HyperscanMatcher(Matcher):
    backend = "hyperscan"

    def __init__(self, patterns: list[Pattern]) -> None:
        import hyperscan as hs

        self._hs = hs
        self._db = None
        self._local = threading.local()
        # Literals need no start-of-match tracking (start = end - length), which keeps the database
        # small and fast; regexes ask Hyperscan for the leftmost start.
        self._literal_len = {p.id: len(p.expr.encode("utf-8")) for p in patterns if p.literal}
        exprs = [(re.escape(p.expr) if p.literal else p.expr).encode("utf-8") for p in patterns]
        flags = [self._flags(p) for p in patterns]
        if not exprs:
            return
        self._db = hs.Database(mode=hs.HS_MODE_BLOCK)
        try:
            self._db.compile(expressions=exprs, ids=[p.id for p in patterns], elements=len(exprs), flags=flags)
        except hs.error as exc:
            self._raise_culprit(patterns, exprs, exc)

    def _flags(self, pattern: Pattern) -> int:
        hs = self._hs
        if pattern.literal:  # valid UTF-8 bytes only match at character starts: no UTF-8 mode needed
            return 0
        return hs.HS_FLAG_UTF8 | hs.HS_FLAG_SOM_LEFTMOST | hs.HS_FLAG_CASELESS

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

    def scan(self, text: str) -> list[Hit]:
        if self._db is None or not text:
            return []
        data = text.encode("utf-8")
        raw: list[tuple[int, int, int]] = []
        add = raw.append
        lengths = self._literal_len

        def on_match(pid: int, start: int, end: int, _flags: int, _ctx: object) -> None:
            add((pid, end - lengths[pid] if pid in lengths else start, end))

        self._db.scan(data, match_event_handler=on_match, scratch=self._scratch())
        if not raw or len(data) == len(text):  # empty, or ASCII: bytes are characters
            return raw
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        widths = 1 + (codes >= 0x80).astype(np.int64) + (codes >= 0x800) + (codes >= 0x10000)
        byte_at = np.zeros(codes.size + 1, dtype=np.int64)
        np.cumsum(widths, out=byte_at[1:])
        arr = np.asarray(raw, dtype=np.int64)
        starts = np.searchsorted(byte_at, arr[:, 1])
        ends = np.searchsorted(byte_at, arr[:, 2])
        return list(zip(arr[:, 0].tolist(), starts.tolist(), ends.tolist(), strict=True))


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
        self._regexes = []
        for p in patterns:
            if p.literal:
                continue
            try:
                self._regexes.append((p.id, re.compile(p.expr, REGEX_FLAGS)))
            except re.error as exc:
                raise MatcherError(p.id, str(exc)) from None

    def scan(self, text: str) -> list[Hit]:
        hits: list[Hit] = []
        if self._automaton is not None and text:
            for end, value in self._automaton.iter(text):
                for pid, length in value:
                    hits.append((pid, end + 1 - length, end + 1))
        for pid, rx in self._regexes:
            hits.extend((pid, m.start(), m.end()) for m in rx.finditer(text))
        return hits


def build_matcher(patterns: list[Pattern], backend: str = "auto") -> Matcher:
    """``backend``: ``auto`` (Hyperscan when it imports), ``hyperscan`` or ``aho-corasick``."""
    if backend == "auto":
        backend = "hyperscan" if hyperscan_available() else "aho-corasick"
    if backend == "hyperscan":
        return HyperscanMatcher(patterns)
    if backend == "aho-corasick":
        return AhoCorasickMatcher(patterns)
    raise ValueError(f"unknown matcher backend {backend!r}")
