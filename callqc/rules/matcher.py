"""One multi-pattern matcher for every phrase and regex of a pack, over many calls at once.

The engine joins the normalised text of a batch of calls into two *layers*: ``plain`` (every call's
text) and ``phon`` (the phonetic layer of the parts phonetic patterns need). ``Matcher.scan`` returns
an int64 array of rows ``(pattern_id, layer, start, end)`` in character offsets of the layer's text.
Plain patterns only count in the plain layer; phonetic patterns are looked for in the phonetic layer
(a hit in the plain layer is a real match too: representative characters are their own phonetic form).

Hyperscan (literals as bytes, regexes in UTF-8 mode) where it imports; otherwise an Aho-Corasick
automaton for the literals plus Python ``re`` for the regexes. Hyperscan uses three databases:

* plain and phonetic patterns, each scanned once over its whole layer (one call for the batch);
* ``first_only`` patterns (only the agent's first use matters) with SINGLEMATCH, scanned per call over
  the call's agent side (plain then phonetic, one vectored scan), so a phrase said fifty times in a
  call costs one callback, not fifty.

Start-of-match tracking (SOM_LEFTMOST) made the database 3-4x slower on call text, so it is off: a
literal starts ``len(literal)`` before its end; a regex's leftmost start is found by Python ``re`` on
the few characters before the end (regex hits are rare and never cross a line), except for patterns
marked ``needs_start=False`` (reported as ``end - 1``).
"""

from __future__ import annotations

import re
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

from callqc.rules.regexcheck import REGEX_FLAGS, sre_parse

_EMPTY = np.zeros((0, 4), dtype=np.int64)
_NONE = np.zeros(0, dtype=np.int64)
_LOOKBACK = 64  # characters searched back for the start of an unbounded regex match
PLAIN, PHONETIC = 0, 1  # layer numbers in scan results


@dataclass(frozen=True)
class Pattern:
    """A normalised literal or a (folded) regex; ``id`` is its index in the matcher."""

    id: int
    expr: str
    literal: bool
    first_only: bool = False  # only the agent's first match in a call is needed (SINGLEMATCH)
    needs_start: bool = True  # False: callers only use the end (start is reported as end - 1)
    phonetic: bool = False  # matched in the phonetic layer


class MatcherError(Exception):
    """A pattern the back-end refuses; ``pattern_id`` says which (-1: none in particular)."""

    def __init__(self, pattern_id: int, reason: str) -> None:
        super().__init__(f"pattern {pattern_id}: {reason}")
        self.pattern_id = pattern_id
        self.reason = reason


class Layer:
    """A joined text and its UTF-8 bytes, with vectorised byte ↔ character offsets.

    Call text is mostly 3-byte (CJK) and 1-byte (ASCII) characters: a byte offset ``b`` is character
    ``(b + 2·n1 + n2 - n4) / 3``, with ``nK`` the K-byte characters before it, so only the (sparse)
    positions of the non-3-byte characters are kept.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.data = text.encode("utf-8")

    @cached_property
    def _lead_bytes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Byte positions of 1-, 2- and 4-byte characters (``None``: all ASCII)."""
        if len(self.data) == len(self.text):
            return None
        b = np.frombuffer(self.data, dtype=np.uint8)
        one = np.flatnonzero(b < 0x80)
        if len(self.data) == 3 * len(self.text) - 2 * len(one) and not (b >= 0xF0).any():
            return one, _NONE, _NONE  # no 4-byte characters, so no 2-byte ones either
        return one, np.flatnonzero((b >= 0xC0) & (b < 0xE0)), np.flatnonzero(b >= 0xF0)

    def chars(self, pos: np.ndarray) -> np.ndarray:
        """Character offsets of byte offsets (each at a character boundary)."""
        lead = self._lead_bytes
        if lead is None:
            return pos
        one, two, four = lead
        out = pos + 2 * np.searchsorted(one, pos)
        if len(two) or len(four):
            out += np.searchsorted(two, pos) - np.searchsorted(four, pos)
        return out // 3

    @cached_property
    def _lead_chars(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        lead = self._lead_bytes
        return None if lead is None else (self.chars(lead[0]), self.chars(lead[1]), self.chars(lead[2]))

    def bytes_at(self, pos: np.ndarray) -> np.ndarray:
        """Byte offsets of character offsets."""
        lead = self._lead_chars
        if lead is None:
            return pos
        one, two, four = lead
        out = 3 * pos - 2 * np.searchsorted(one, pos)
        if len(two) or len(four):
            out += np.searchsorted(four, pos) - np.searchsorted(two, pos)
        return out


class Matcher(ABC):
    backend: str

    @abstractmethod
    def scan(self, plain: Layer, phon: Layer | None, agent: np.ndarray) -> np.ndarray:
        """Matches of every pattern: int64 rows ``(pattern_id, layer, start, end)`` (character offsets).

        ``agent`` holds one row per call, ``(plain_byte_start, phon_byte_start, byte_length)`` of the
        call's agent side: ``first_only`` patterns need only be reported there, once per call.
        """


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


@lru_cache(maxsize=16)
def _compiled_database(exprs: tuple[bytes, ...], ids: tuple[int, ...], flags: tuple[int, ...], mode: int) -> object:
    """Compile once per distinct pattern set (a reload of the same pack reuses it; scans only read it)."""
    import hyperscan as hs

    db = hs.Database(mode=mode)
    db.compile(expressions=list(exprs), ids=list(ids), elements=len(exprs), flags=list(flags))
    return db


class HyperscanMatcher(Matcher):
    backend = "hyperscan"

    def __init__(self, patterns: list[Pattern]) -> None:
        import hyperscan as hs

        self._hs = hs
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
        self._needs_recovery = np.zeros(max(size, 1), dtype=bool)
        self._needs_recovery[list(self._regex_start)] = True
        block, vectored = hs.HS_MODE_BLOCK, hs.HS_MODE_VECTORED
        self._plain = self._database([p for p in patterns if not p.first_only and not p.phonetic], block)
        self._phon = self._database([p for p in patterns if not p.first_only and p.phonetic], block)
        self._first = self._database([p for p in patterns if p.first_only], vectored)

    def _database(self, patterns: list[Pattern], mode: int) -> object | None:
        if not patterns:
            return None
        exprs = [(re.escape(p.expr) if p.literal else p.expr).encode("utf-8") for p in patterns]
        flags = tuple(self._flags(p) for p in patterns)
        try:
            return _compiled_database(tuple(exprs), tuple(p.id for p in patterns), flags, mode)
        except self._hs.error as exc:
            self._raise_culprit(patterns, exprs, exc)
        return None  # pragma: no cover - _raise_culprit always raises

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

    def _scratch(self, db: object) -> object:
        """One scratch per database per thread (scans of one engine may run in many threads)."""
        scratches = getattr(self._local, "scratches", None)
        if scratches is None:
            scratches = self._local.scratches = {}
        scratch = scratches.get(id(db))
        if scratch is None:
            scratch = scratches[id(db)] = self._hs.Scratch(db)
        return scratch

    def scan(self, plain: Layer, phon: Layer | None, agent: np.ndarray) -> np.ndarray:
        raw: list[int] = []  # pattern id, end byte, pattern id, end byte, ...
        add = raw.append

        def on_match(pid: int, _start: int, end: int, _flags: int, _ctx: object) -> None:
            add(pid)
            add(end)

        cuts = [0]
        for db, layer in ((self._plain, plain), (self._phon, phon)):
            if db is not None and layer is not None and layer.data:
                db.scan(layer.data, match_event_handler=on_match, scratch=self._scratch(db))  # type: ignore[attr-defined]
            cuts.append(len(raw) // 2)
        firsts = self._scan_first(plain, phon, agent, on_match, raw)
        if not raw:
            return _EMPTY
        hits = np.array(raw, dtype=np.int64).reshape(-1, 2)
        layer_of = np.zeros(len(hits), dtype=np.int64)
        layer_of[cuts[1] : cuts[2]] = PHONETIC
        byte_end = hits[:, 1].copy()
        if firsts is not None:
            in_phon, pos = firsts
            layer_of[cuts[2] :] = in_phon
            byte_end[cuts[2] :] = pos
        out = np.empty((len(hits), 4), dtype=np.int64)
        out[:, 0] = pid = hits[:, 0]
        out[:, 1] = layer_of
        for number, layer in ((PLAIN, plain), (PHONETIC, phon)):
            rows = layer_of == number
            if layer is not None and rows.any():
                out[rows, 3] = layer.chars(byte_end[rows])
        out[:, 2] = out[:, 3] - self._literal_chars[pid]  # a regex gets end - 1 until its start is found
        if self._regex_start:
            for row in np.flatnonzero(self._needs_recovery[pid]).tolist():
                layer = phon if out[row, 1] == PHONETIC and phon is not None else plain
                out[row, 2] = _regex_start_of(layer.text, self._regex_start[int(pid[row])], int(out[row, 3]))
        return out

    def _scan_first(
        self, plain: Layer, phon: Layer | None, agent: np.ndarray, on_match: object, raw: list[int]
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """SINGLEMATCH patterns, one vectored scan per call over its agent side: (in phonetic layer?, byte end)."""
        db = self._first
        start = len(raw) // 2
        if db is None or not len(agent):
            return None
        agent = agent[agent[:, 2] > 0]
        with_phon = phon is not None and bool(phon.data)
        # the plain part keeps the separator after it, so no match runs on into the phonetic part
        head = np.minimum(agent[:, 2] + 1, len(plain.data) - agent[:, 0]) if with_phon else agent[:, 2]
        plain_view = memoryview(plain.data)
        phon_view = memoryview(phon.data) if with_phon and phon is not None else None
        scan, scratch = db.scan, self._scratch(db)  # type: ignore[attr-defined]
        marks: list[int] = []
        mark = marks.append
        for p0, q0, n, h in zip(agent[:, 0].tolist(), agent[:, 1].tolist(), agent[:, 2].tolist(), head.tolist()):
            parts = [plain_view[p0 : p0 + h], phon_view[q0 : q0 + n]] if phon_view is not None else [plain_view[p0 : p0 + n]]
            scan(parts, match_event_handler=on_match, scratch=scratch)
            mark(len(raw) // 2)
        if len(raw) // 2 == start:
            return None
        counts = np.diff(np.array([start, *marks], dtype=np.int64))
        call = np.repeat(np.arange(len(agent)), counts)
        end = np.array(raw[2 * start + 1 :: 2], dtype=np.int64)
        in_phon = end > head[call] if phon_view is not None else np.zeros(len(end), dtype=bool)
        pos = np.where(in_phon, agent[call, 1] + end - head[call], agent[call, 0] + end)
        return in_phon.astype(np.int64), pos


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
        self._automata = {PLAIN: self._automaton(patterns, False), PHONETIC: self._automaton(patterns, True)}
        self._regexes = {
            layer: [(p.id, _compile_regex(p)) for p in patterns if not p.literal and p.phonetic == (layer == PHONETIC)]
            for layer in (PLAIN, PHONETIC)
        }

    @staticmethod
    def _automaton(patterns: list[Pattern], phonetic: bool) -> object | None:
        import ahocorasick

        literals: dict[str, list[tuple[int, int]]] = {}
        for p in patterns:
            if p.literal and p.phonetic == phonetic:
                literals.setdefault(p.expr, []).append((p.id, len(p.expr)))
        if not literals:
            return None
        automaton = ahocorasick.Automaton()
        for key, value in literals.items():
            automaton.add_word(key, value)
        automaton.make_automaton()
        return automaton

    def scan(self, plain: Layer, phon: Layer | None, agent: np.ndarray) -> np.ndarray:
        hits: list[tuple[int, int, int, int]] = []
        for layer, joined in ((PLAIN, plain), (PHONETIC, phon)):
            if joined is None or not joined.text:
                continue
            automaton = self._automata[layer]
            if automaton is not None:
                for end, value in automaton.iter(joined.text):  # type: ignore[attr-defined]
                    hits.extend((pid, layer, end + 1 - length, end + 1) for pid, length in value)
            for pid, rx in self._regexes[layer]:
                hits.extend((pid, layer, m.start(), m.end()) for m in rx.finditer(joined.text))
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
