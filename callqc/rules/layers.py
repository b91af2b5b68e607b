"""The joined text the matcher scans: UTF-8 layers with byte → character offsets, and a narrow view.

``Layer`` holds a batch's joined text and its UTF-8 bytes. ``NarrowAlphabet`` gives a
one-byte-per-character view of it for regexes (Hyperscan is slow on ``.{0,8}`` over UTF-8).

A regex such as ``欠.{0,3}钱`` in UTF-8 mode makes Hyperscan track multi-byte characters after every
frequent character; over a *narrow* layer, where each character of the text is one byte, the same
regex is a plain byte regex and runs several times faster. The narrow layer keeps ASCII as it is,
gives each non-ASCII character the regexes mention a byte of its own (0x80-0xFF, so at most 128 of
them) and turns every other character into one filler byte no regex mentions. Offsets in the narrow
layer are character offsets, so hits need no byte → character conversion either.

Only regexes whose non-ASCII characters are all written literally (no ranges or escapes above ASCII)
qualify, and of those the ones narrow mode pays off for: a gap between single characters, or no
mandatory literal run longer than one character; the rest stay on the UTF-8 layer.
"""

from __future__ import annotations

from functools import cached_property
from re import _constants as sre_c  # type: ignore[attr-defined]

import numpy as np

from callqc.rules.regexcheck import REGEX_FLAGS, sre_parse
from callqc.textnorm import SEPARATOR

_NONE = np.zeros(0, dtype=np.int64)
FILLER = 0x1A  # ASCII SUB: never in normalised text, never in a pattern
_SLOTS = 128


class Layer:
    """A joined text and its UTF-8 bytes, with vectorised byte → character offsets.

    Call text is mostly 3-byte (CJK) and 1-byte (ASCII) characters: a byte offset ``b`` is character
    ``(b + 2·n1 + n2 - n4) / 3``, with ``nK`` the K-byte characters before it, so only the (sparse)
    positions of the non-3-byte characters are kept. ``like`` is a layer with the same byte layout
    (the phonetic layer: homophone classes keep every character's width), whose index is shared.
    """

    def __init__(self, text: str, like: Layer | None = None) -> None:
        self.text = text
        self.data = text.encode("utf-8")
        self._like = like

    @cached_property
    def lead_bytes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Byte positions of 1-, 2- and 4-byte characters (``None``: all ASCII)."""
        if self._like is not None:
            return self._like.lead_bytes
        if len(self.data) == len(self.text):
            return None
        b = np.frombuffer(self.data, dtype=np.uint8)
        one = np.flatnonzero(b < 0x80)
        if len(self.data) == 3 * len(self.text) - 2 * len(one) and not (b >= 0xF0).any():
            return one, _NONE, _NONE  # no 4-byte characters, so no 2-byte ones either
        return one, np.flatnonzero((b >= 0xC0) & (b < 0xE0)), np.flatnonzero(b >= 0xF0)

    @cached_property
    def separators(self) -> np.ndarray:
        """Byte offsets of every SEPARATOR (found among the 1-byte characters)."""
        lead = self.lead_bytes
        b = np.frombuffer(self.data, dtype=np.uint8)
        if lead is None:
            return np.flatnonzero(b == ord(SEPARATOR))
        return lead[0][b[lead[0]] == ord(SEPARATOR)]

    def chars(self, pos: np.ndarray) -> np.ndarray:
        """Character offsets of byte offsets (each at a character boundary)."""
        lead = self.lead_bytes
        if lead is None:
            return pos
        one, two, four = lead
        out = pos + 2 * np.searchsorted(one, pos)
        if len(two) or len(four):
            out += np.searchsorted(two, pos) - np.searchsorted(four, pos)
        return out // 3


def _codes(items: object) -> set[int] | None:
    """Non-ASCII code points a parsed regex mentions; ``None`` if it has a range or construct above ASCII."""
    found: set[int] = set()
    for op, arg in items:  # type: ignore[attr-defined]
        if op in (sre_c.LITERAL, sre_c.NOT_LITERAL):
            if arg == FILLER:
                return None
            if arg > 0x7F:
                found.add(arg)
        elif op is sre_c.RANGE:
            if arg[1] > 0x7F:
                return None
        elif op is sre_c.IN:
            inner = _codes(arg)
            if inner is None:
                return None
            found |= inner
        elif op is sre_c.BRANCH:
            for branch in arg[1]:
                inner = _codes(branch)
                if inner is None:
                    return None
                found |= inner
        elif op in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT) or op is sre_c.SUBPATTERN:
            inner = _codes(arg[-1])
            if inner is None:
                return None
            found |= inner
        elif op not in (sre_c.ANY, sre_c.AT, sre_c.CATEGORY, sre_c.NEGATE):
            return None
    return found


def _shape(items: object) -> tuple[int, bool]:
    """(longest run of literal characters, has a repeated wildcard or class) of a parsed regex."""
    longest, run, gap = 0, 0, False
    for op, arg in items:  # type: ignore[attr-defined]
        if op is sre_c.LITERAL:
            run += 1
            longest = max(longest, run)
            continue
        run = 0
        if op in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT):
            inner_longest, inner_gap = _shape(arg[2])
            body = list(arg[2])
            wild = len(body) == 1 and body[0][0] in (sre_c.ANY, sre_c.IN, sre_c.NOT_LITERAL)
            gap = gap or inner_gap or (wild and arg[1] > 1)
            longest = max(longest, inner_longest)
        elif op is sre_c.SUBPATTERN or op is sre_c.BRANCH:
            for branch in [arg[-1]] if op is sre_c.SUBPATTERN else arg[1]:
                inner_longest, inner_gap = _shape(branch)
                longest, gap = max(longest, inner_longest), gap or inner_gap
    return longest, gap


def _fixed_width(items: object) -> int | None:
    """Characters every match of a literal-only element takes (its shortest alternative), else ``None``."""
    total = 0
    for op, arg in items:  # type: ignore[attr-defined]
        if op is sre_c.LITERAL or (op is sre_c.IN and all(kind is sre_c.LITERAL for kind, _ in arg)):
            total += 1  # a character, or one of a few (``(打|揍)`` parses as a class)
        elif op is sre_c.BRANCH:
            widths = [_fixed_width(branch) for branch in arg[1]]
            if any(w is None for w in widths):
                return None
            total += min(widths)  # type: ignore[type-var]
        elif op is sre_c.SUBPATTERN:
            inner = _fixed_width(arg[-1])
            if inner is None:
                return None
            total += inner
        else:
            return None
    return total


def _required_factor(parsed: object) -> int:
    """Characters of the longest run of mandatory literal elements (words or alternations of words) every
    match contains: what Hyperscan can look for first. Optional parts, classes and gaps end a run."""
    longest = run = 0
    for op, arg in parsed:  # type: ignore[attr-defined]
        width = _fixed_width([(op, arg)])
        run = run + width if width is not None else 0
        longest = max(longest, run)
    return longest


def _pays_off(parsed: object) -> bool:
    """Narrow mode wins for gaps between single characters (``甲.{0,3}乙``) and for regexes whose every
    mandatory literal run is one character (``(转|打|还)(到|给)?我的?(卡|账户)``): Hyperscan then has no word
    to look for first and runs its UTF-8 automaton at every frequent character. With words around a gap,
    its literal prefilter already makes the UTF-8 regex cheap (measured on the default pack)."""
    longest, gap = _shape(parsed)
    return (gap and longest <= 1) or _required_factor(parsed) <= 1


class NarrowAlphabet:
    """The byte of every character for a set of regexes, and those regexes rewritten for it."""

    def __init__(self, regexes: dict[int, str]) -> None:
        """``regexes``: pattern id → folded regex. Keeps those that qualify, until 128 characters are used."""
        self.exprs: dict[int, bytes] = {}
        assigned: dict[int, int] = {}
        for pid, expr in regexes.items():
            parsed = sre_parse.parse(expr, REGEX_FLAGS)
            codes = _codes(parsed)
            if codes is None or codes != {ord(c) for c in expr if ord(c) > 0x7F} or not _pays_off(parsed):
                continue  # a range or an escape above ASCII, or no gain: stays in UTF-8 mode
            new = codes - assigned.keys()
            if len(assigned) + len(new) > _SLOTS:
                continue
            for code in sorted(new):
                assigned[code] = 0x80 + len(assigned)
            self.exprs[pid] = "".join(f"\\x{assigned[ord(c)]:02x}" if ord(c) > 0x7F else c for c in expr).encode()
        self._assigned = assigned

    @cached_property
    def table(self) -> np.ndarray:
        """Byte of every code point (1.1 MB, built on first use)."""
        table = np.full(0x110000, FILLER, dtype=np.uint8)
        table[:0x80] = np.arange(0x80, dtype=np.uint8)
        table[list(self._assigned)] = list(self._assigned.values())
        return table

    def encode(self, text: str) -> bytes:
        """The narrow layer of ``text``: one byte per character."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        return np.take(self.table, codes).tobytes()
