"""One multi-pattern matcher for every phrase and regex of a pack, over many calls at once.

The engine joins the normalised text of a batch of calls into two *layers* of one layout: ``plain``
(the calls' text) and ``phon`` (their phonetic text, when the pack has phonetic patterns).
``Matcher.scan`` returns int64 rows ``(pattern_id, layer, start, end, end_byte)``, character offsets
in the layers. Plain patterns are looked for in the plain layer, phonetic patterns in the phonetic
layer (a hit of one in the plain layer is a real match too: representative characters are their own
phonetic form); the engine drops plain-pattern hits in the phonetic layer.

The Python back-ends: Hyperscan's Python binding (literals as bytes, regexes in UTF-8 mode) where
it imports; otherwise an Aho-Corasick automaton for the literals plus Python ``re`` for the regexes.
Where the native core is built (native.py, ``callqc/rules/_recall.c``) it replaces both.
The binding uses four databases:

* plain and phonetic patterns, each scanned once over its whole layer (one call for the batch);
* the plain regexes that qualify, over a one-byte-per-character view of the plain layer (layers.py);
* ``first_only`` patterns (only the agent's first use matters) with SINGLEMATCH, scanned per call over
  the call's agent side (plain then phonetic, one vectored scan), so a phrase said fifty times in a
  call costs one callback, not fifty.

The Python binding calls back into Python for every match (~0.5 µs each): that, not Hyperscan, is
what a scan of a phrase-dense call costs, so the callback only appends two ints.

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
from functools import lru_cache

import numpy as np

from callqc.rules.layers import Layer, NarrowAlphabet
from callqc.rules.regexcheck import REGEX_FLAGS, sre_parse

_EMPTY = np.zeros((0, 5), dtype=np.int64)
_LOOKBACK = 64  # characters searched back for the start of an unbounded regex match
PLAIN, PHONETIC = 0, 1  # layer numbers in scan results
_FEW_CALLS = 4  # up to this many calls, plain Python beats a dozen small numpy calls


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


class Matcher(ABC):
    backend: str
    per_call = False  # True: some patterns are scanned per call and ``scan`` needs ``agent``

    @abstractmethod
    def scan(self, plain: Layer, phon: Layer | None, agent: np.ndarray) -> np.ndarray:
        """Matches of every pattern: int64 rows ``(pattern_id, layer, start, end, end_byte)``.

        ``start`` and ``end`` are character offsets in the layer's text, ``end_byte`` the UTF-8 offset
        of ``end`` (literals; word-boundary checks use it). ``phon`` has the same layout as ``plain``.
        ``agent`` holds ``(byte_start, byte_length)`` of each call's agent side: ``first_only``
        patterns need only be reported there, once per call.
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
                self._regex_start[p.id] = regex_start_pattern(p.expr)
        self._needs_recovery = np.zeros(max(size, 1), dtype=bool)
        self._needs_recovery[list(self._regex_start)] = True
        block, vectored = hs.HS_MODE_BLOCK, hs.HS_MODE_VECTORED
        plain = [p for p in patterns if not p.first_only and not p.phonetic]
        self._narrow, self._narrow_db = self._narrow_database([p for p in plain if not p.literal])
        narrow_ids = self._narrow.exprs.keys() if self._narrow_db is not None else set()
        self._plain = self._database([p for p in plain if p.id not in narrow_ids], block)
        self._phon = self._database([p for p in patterns if not p.first_only and p.phonetic], block)
        self._first = self._database([p for p in patterns if p.first_only], vectored)
        self.per_call = self._first is not None

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

    def _narrow_database(self, regexes: list[Pattern]) -> tuple[NarrowAlphabet, object | None]:
        """The regexes that run faster over the one-byte-per-character layer (none if they do not compile)."""
        narrow = NarrowAlphabet({p.id: p.expr for p in regexes})
        if not narrow.exprs:
            return narrow, None
        flags = (self._hs.HS_FLAG_CASELESS,) * len(narrow.exprs)
        try:
            db = _compiled_database(tuple(narrow.exprs.values()), tuple(narrow.exprs), flags, self._hs.HS_MODE_BLOCK)
        except self._hs.error:  # a construct the rewrite got wrong: keep them all in UTF-8 mode
            return narrow, None
        return narrow, db

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
        raw: list[int] = []  # pattern id, end offset, pattern id, end offset, ...
        add = raw.append

        def on_match(pid: int, _start: int, end: int, _flags: int, _ctx: object) -> None:
            add(pid)
            add(end)

        if self._plain is not None and plain.data:
            self._plain.scan(plain.data, match_event_handler=on_match, scratch=self._scratch(self._plain))  # type: ignore[attr-defined]
        cut_phon = len(raw) // 2
        if self._phon is not None and phon is not None and phon.data:
            self._phon.scan(phon.data, match_event_handler=on_match, scratch=self._scratch(self._phon))  # type: ignore[attr-defined]
        cut_narrow = len(raw) // 2
        if self._narrow_db is not None and plain.text:
            narrow = self._narrow.encode(plain.text)
            self._narrow_db.scan(narrow, match_event_handler=on_match, scratch=self._scratch(self._narrow_db))  # type: ignore[attr-defined]
        cut_first = len(raw) // 2
        firsts = self._scan_first(plain, phon, agent, on_match, raw)
        if not raw:
            return _EMPTY
        flat = np.array(raw, dtype=np.int64)
        pid, end_byte = flat[0::2], flat[1::2]  # end_byte: UTF-8 offsets, except in the narrow layer
        layer = np.zeros(len(pid), dtype=np.int64)
        layer[cut_phon:cut_narrow] = PHONETIC
        if firsts is not None:
            layer[cut_first:], end_byte[cut_first:] = firsts
        if cut_first > cut_narrow:  # narrow hits are character offsets already
            end = end_byte.copy()
            utf8 = np.ones(len(pid), dtype=bool)
            utf8[cut_narrow:cut_first] = False
            end[utf8] = plain.chars(end_byte[utf8])
            end_byte[~utf8] = _byte_offsets(plain.text)[end[~utf8]]
        else:
            end = plain.chars(end_byte)  # both UTF-8 layers have one layout
        start = end - self._literal_chars[pid]  # a regex gets end - 1 until its start is found
        if self._regex_start:
            for row in np.flatnonzero(self._needs_recovery[pid]).tolist():
                text = phon.text if layer[row] == PHONETIC and phon is not None else plain.text
                start[row] = regex_start_of(text, self._regex_start[int(pid[row])], int(end[row]))
        return np.stack((pid, layer, start, end, end_byte), axis=1)

    def _scan_first(
        self, plain: Layer, phon: Layer | None, agent: np.ndarray, on_match: object, raw: list[int]
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """SINGLEMATCH patterns, one vectored scan per call over its agent side.

        Returns the layer and the layer byte offset of the end of each hit it added to ``raw``.
        """
        db = self._first
        if db is None or not len(agent):
            return None
        first = len(raw) // 2
        plain_view = memoryview(plain.data)
        phon_view = memoryview(phon.data) if phon is not None and phon.data else None
        scan, scratch = db.scan, self._scratch(db)  # type: ignore[attr-defined]
        spans: list[tuple[int, int, int]] = []  # (p0, head, hits so far) of every call scanned
        for p0, n in agent.tolist():
            if not n:
                continue
            # the plain part keeps the separator after it, so no match runs on into the phonetic part
            head = min(n + 1, len(plain.data) - p0)
            parts = [plain_view[p0 : p0 + head]]
            if phon_view is not None:
                parts.append(phon_view[p0 : p0 + n])
            scan(parts, match_event_handler=on_match, scratch=scratch)
            spans.append((p0, head, len(raw) // 2))
        if len(raw) // 2 == first:
            return None
        if len(spans) <= _FEW_CALLS:  # a few calls: plain Python beats a dozen small numpy calls
            layers: list[int] = []
            positions: list[int] = []
            done = first
            for p0, head, upto in spans:
                ends = raw[2 * done + 1 : 2 * upto : 2]
                positions += [p0 + e if e <= head else p0 + e - head for e in ends]
                layers += [PLAIN if e <= head else PHONETIC for e in ends]
                done = upto
            return np.array(layers, dtype=np.int64), np.array(positions, dtype=np.int64)
        table = np.array(spans, dtype=np.int64)
        call = np.repeat(np.arange(len(spans)), np.diff(table[:, 2], prepend=first))
        ends = np.array(raw[2 * first + 1 :: 2], dtype=np.int64)
        in_phon = ends > table[call, 1]
        return in_phon.astype(np.int64), table[call, 0] + np.where(in_phon, ends - table[call, 1], ends)


def _byte_offsets(text: str) -> np.ndarray:
    """UTF-8 byte offset of every character of ``text`` (and of its end)."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    widths = 1 + (codes >= 0x80).astype(np.int64) + (codes >= 0x800) + (codes >= 0x10000)
    return np.concatenate(([0], np.cumsum(widths)))


def regex_start_pattern(expr: str) -> tuple[re.Pattern[str], int]:
    """The regex anchored at its end, and how many characters before an end its start can lie."""
    widest = sre_parse.parse(expr, REGEX_FLAGS).getwidth()[1]
    return re.compile(f"(?:{expr})\\Z", REGEX_FLAGS), min(widest, _LOOKBACK)


def regex_start_of(text: str, found: tuple[re.Pattern[str], int], end: int) -> int:
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
        if not hits:
            return _EMPTY
        out = np.zeros((len(hits), 5), dtype=np.int64)
        out[:, :4] = hits
        out[:, 4] = _byte_offsets(plain.text)[out[:, 3]]
        return out
