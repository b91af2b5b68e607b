"""Text normalisation before rule matching, with a map back to the original characters.

``normalize`` folds traditional→simplified (OpenCC t2s, character level so lengths never change),
full-width→half-width and English case, drops punctuation and whitespace (a single space survives
between two ASCII letters/digits so English words stay apart; a ``.`` survives between two digits),
and keeps, for every normalised character, the index of the original character it came from.
Patterns go through the same function, so the text and the patterns always agree.

``phonetic`` maps every Chinese character to one representative of its toneless pinyin class
(逾期 and 于七 both become the same two characters), one character for one character, so offsets
in the phonetic layer are offsets in the normalised text.

``parse_number`` / ``find_amounts`` / ``find_days`` read spoken numbers (三万五千, 3.5万, 35,000元).
Everything is vectorised with numpy: a call's text is normalised in microseconds.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = [
    "SEGMENT_BREAK",
    "SEPARATOR",
    "Amount",
    "NormText",
    "find_amounts",
    "find_days",
    "is_cjk",
    "normalize",
    "normalize_text",
    "parse_number",
    "phonetic",
]

SEGMENT_BREAK = "\x1e"  # put between segments in the original text; becomes SEPARATOR
SEPARATOR = "\n"  # the only control character that survives normalisation

_N = 0x110000
_DROP, _SPACE, _DOT = 0, 1, 2  # markers in the mapping table (the real chars are dropped anyway)
_CJK_RANGES = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF))


def is_cjk(ch: str) -> bool:
    """True for a CJK unified / compatibility ideograph (the characters the phonetic layer folds)."""
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


@dataclass(frozen=True)
class _Tables:
    fold: np.ndarray  # uint32[_N]: code point → normalised code point or a marker
    alnum: np.ndarray  # bool[_N]: ASCII letter or digit
    digit: np.ndarray  # bool[_N]: ASCII digit


def _t2s_chars() -> dict[int, int]:
    """Character-level traditional→simplified map taken from OpenCC's t2s conversion."""
    import opencc

    chars = [chr(cp) for lo, hi in _CJK_RANGES for cp in range(lo, hi + 1)]
    converted = opencc.OpenCC("t2s").convert("\n".join(chars)).split("\n")
    if len(converted) != len(chars):  # pragma: no cover - OpenCC changed its output shape
        return {}
    return {
        ord(a): ord(b)
        for a, b in zip(chars, converted, strict=True)
        if len(b) == 1 and a != b and ord(b) < 0x10000
    }


@lru_cache(maxsize=1)
def _tables() -> _Tables:
    fold = np.arange(_N, dtype=np.uint32)
    fold[0xFF01:0xFF5F] -= 0xFEE0  # full-width ASCII → ASCII
    fold[0x3000] = 0x20  # ideographic space
    upper = np.arange(ord("A"), ord("Z") + 1)
    fold[np.isin(fold, upper)] += 32  # lower-case English, also after full-width folding
    for src, dst in _t2s_chars().items():
        fold[src] = dst
    for cp in range(0x10000):  # classify the BMP by the category of the *folded* character
        cat = unicodedata.category(chr(int(fold[cp])))
        if cat[0] in "PZ" or cat in ("Cc", "Cf"):
            ch = chr(int(fold[cp]))
            fold[cp] = _DOT if ch == "." else (_SPACE if ch.isspace() else _DROP)
    fold[ord(SEGMENT_BREAK)] = ord(SEPARATOR)
    alnum = np.zeros(_N, dtype=bool)
    digit = np.zeros(_N, dtype=bool)
    for ch in "abcdefghijklmnopqrstuvwxyz0123456789":
        alnum[ord(ch)] = True
    for ch in "0123456789":
        digit[ord(ch)] = True
    return _Tables(fold=fold, alnum=alnum, digit=digit)


@dataclass(frozen=True)
class NormText:
    """Normalised text plus, for each of its characters, the index of the original character."""

    text: str
    offsets: np.ndarray  # int64, len(text) entries
    original: str

    def to_original(self, start: int, end: int) -> tuple[int, int]:
        """Original ``[start, end)`` span covering the normalised ``[start, end)`` span."""
        if end <= start:
            pos = int(self.offsets[start]) if start < len(self.offsets) else len(self.original)
            return pos, pos
        return int(self.offsets[start]), int(self.offsets[end - 1]) + 1

    def from_original(self, pos: int) -> int:
        """First normalised index whose original character is at or after ``pos``."""
        return int(np.searchsorted(self.offsets, pos, side="left"))


def normalize(text: str) -> NormText:
    """Normalise ``text`` for matching and keep the map back to original offsets."""
    t = _tables()
    if not text:
        return NormText("", np.zeros(0, dtype=np.int64), text)
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    mapped = t.fold[codes]
    keep = mapped > _DOT
    spaces = np.flatnonzero(mapped == _SPACE)
    dots = np.flatnonzero(mapped == _DOT)
    out = mapped.copy()
    if spaces.size:
        content = np.flatnonzero(keep)
        nxt = np.searchsorted(content, spaces)  # index into content of the next kept character
        ok = (nxt > 0) & (nxt < content.size)
        nxt_c = np.minimum(nxt, content.size - 1)
        prev_c = np.maximum(nxt - 1, 0)
        if content.size:
            ok &= t.alnum[mapped[content[prev_c]]] & t.alnum[mapped[content[nxt_c]]]
        else:
            ok[:] = False
        first = np.ones(spaces.size, dtype=bool)
        first[1:] = nxt[1:] != nxt[:-1]  # one space per run of whitespace
        chosen = spaces[ok & first]
        keep[chosen] = True
        out[chosen] = 0x20
    if dots.size:
        inner = dots[(dots > 0) & (dots < codes.size - 1)]
        between = t.digit[mapped[inner - 1]] & t.digit[mapped[inner + 1]]
        chosen = inner[between]
        keep[chosen] = True
        out[chosen] = 0x2E
    idx = np.flatnonzero(keep)
    norm = out[idx].tobytes().decode("utf-32-le")
    return NormText(norm, idx.astype(np.int64), text)


@lru_cache(maxsize=4096)
def normalize_text(text: str) -> str:
    """Just the normalised string (for patterns, phrases and word lists)."""
    return normalize(text).text


@lru_cache(maxsize=1)
def _phonetic_table() -> np.ndarray:
    """uint32[_N]: each Chinese character → the smallest character with the same toneless pinyin."""
    from pypinyin.pinyin_dict import pinyin_dict

    table = np.arange(_N, dtype=np.uint32)
    reps: dict[str, int] = {}
    main_block_first = sorted(pinyin_dict, key=lambda cp: (not 0x4E00 <= cp <= 0x9FFF, cp))
    for cp in main_block_first:
        if not any(lo <= cp <= hi for lo, hi in _CJK_RANGES):
            continue
        reading = pinyin_dict[cp].split(",")[0]
        decomposed = unicodedata.normalize("NFD", reading).replace("\u0308", "v")
        key = "".join(c for c in decomposed if not unicodedata.combining(c))
        table[cp] = reps.setdefault(key, cp)
    return table


def phonetic(text: str) -> str:
    """Fold Chinese characters to their homophone-class representative (same length as ``text``)."""
    if not text:
        return text
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    return _phonetic_table()[codes].tobytes().decode("utf-32-le")


# --- spoken numbers -----------------------------------------------------------------------

_CN_DIGITS = "零〇一二两三四五六七八九"
_CN_UNITS = "十百千万亿"
_NUMBER = (
    rf"(?:[0-9][0-9,]*(?:\.[0-9]+)?(?:[{_CN_UNITS}][0-9{_CN_DIGITS}{_CN_UNITS}]*)?"
    rf"|[{_CN_DIGITS}{_CN_UNITS}][{_CN_DIGITS}{_CN_UNITS}点]*)"
)
_MONEY_UNIT = r"(?:元|块钱|块|圆|人民币| ?yuan| ?rmb| ?dollars?)"
_AMOUNT_RE = re.compile(rf"(?:¥|\$|rmb ?)?({_NUMBER})( ?{_MONEY_UNIT})?", re.IGNORECASE)
_DAYS_RE = re.compile(rf"({_NUMBER}) ?(?:天|日|days?\b)", re.IGNORECASE)


def parse_number(text: str) -> float | None:
    """Read a number written in digits, Chinese numerals or a mix: 三万五千, 3.5万, 35,000元 → 35000."""
    import cn2an

    s = re.sub(r"(元|块钱|块|圆|人民币|yuan|rmb|dollars?|[¥$,，\s])", "", text, flags=re.IGNORECASE)
    s = s.replace("〇", "零")
    if not s:
        return None
    try:
        return float(cn2an.cn2an(s, "smart"))
    except (ValueError, KeyError, IndexError, TypeError):
        pass
    for unit, factor in (("亿", 1e8), ("万", 1e4), ("千", 1e3)):  # 三点五万, 1.2亿 …
        head, sep, tail = s.rpartition(unit)
        if sep and head:
            lead = parse_number(head)
            rest = parse_number(tail) if tail else 0.0
            if lead is not None and rest is not None:
                return lead * factor + rest
    return None


@dataclass(frozen=True)
class Amount:
    """A number found in text: ``text[start:end]`` reads as ``value``."""

    start: int
    end: int
    value: float
    text: str


def _is_amountish(number: str, unit: str | None) -> bool:
    if unit:
        return True
    return any(c in "万千亿" for c in number) or sum(c.isdigit() for c in number) >= 3


def find_amounts(text: str) -> list[Amount]:
    """Money amounts in ``text``: numbers with a currency unit, a 千/万/亿 magnitude, or ≥ 3 digits."""
    found = []
    for m in _AMOUNT_RE.finditer(text):
        number, unit = m.group(1), m.group(2)
        if not _is_amountish(number, unit):
            continue
        value = parse_number(number)
        if value is not None:
            found.append(Amount(m.start(), m.end(), value, m.group(0)))
    return found


def find_days(text: str) -> list[Amount]:
    """Day counts in ``text`` (逾期三十天 → 30, "45 days" → 45)."""
    found = []
    for m in _DAYS_RE.finditer(text):
        value = parse_number(m.group(1))
        if value is not None:
            found.append(Amount(m.start(), m.end(), value, m.group(0)))
    return found
