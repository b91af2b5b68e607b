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
        ord(a): ord(b) for a, b in zip(chars, converted, strict=True) if len(b) == 1 and a != b and ord(b) < 0x10000
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
    codes: np.ndarray  # uint32 code points of ``text``

    def ascii_alnum(self) -> np.ndarray:
        """bool per normalised character: an English letter or digit (for word-boundary checks)."""
        return _tables().alnum[self.codes]

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
        return NormText("", np.zeros(0, dtype=np.int64), text, np.zeros(0, dtype=np.uint32))
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
    codes_out = out[idx]
    return NormText(codes_out.tobytes().decode("utf-32-le"), idx.astype(np.int64), text, codes_out)


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


def phonetic(text: str | NormText) -> str:
    """Fold Chinese characters to their homophone-class representative (same length as ``text``)."""
    if isinstance(text, NormText):
        codes = text.codes
    elif text:
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    else:
        return ""
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


_UNIT_STRIP = re.compile(r"(元|块钱|块|圆|人民币|yuan|rmb|dollars?|[¥$,，\s])", re.IGNORECASE)
_DIGIT_VALUES = {ch: i for i, ch in enumerate("零一二三四五六七八九")} | {"〇": 0, "两": 2}
_SMALL_UNITS = {"十": 10, "百": 100, "千": 1000}
_BIG_UNITS = {"万": 10_000, "亿": 100_000_000}
_ARABIC = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def _parse_cn(s: str) -> float | None:
    """Chinese numerals, Arabic digit runs and their mix, incl. colloquial 一万二 (12000), 三千五 (3500)."""
    total = 0.0  # finished 亿 / 万 sections
    section = 0.0  # below the current big unit
    number: float | None = None  # the digit(s) waiting for a unit
    single = False  # ``number`` is one spoken digit (一万二: 二 means 2000)
    last_unit = 0  # the unit just before ``number``
    seen = False
    i = 0
    while i < len(s):
        ch = s[i]
        if ch in _DIGIT_VALUES:
            number, single, seen = float(_DIGIT_VALUES[ch]), True, True
            if ch in "零〇":
                last_unit = 0  # 一万零二 is 10002, not 12000
        elif ch.isdigit():
            m = _ARABIC.match(s, i)
            if m is None:
                return None
            number, single, seen = float(m.group(0)), len(m.group(0)) == 1, True
            i = m.end()
            continue
        elif ch == "点" and number is not None:
            j = i + 1
            while j < len(s) and s[j] in _DIGIT_VALUES:
                j += 1
            decimals = "".join(str(_DIGIT_VALUES[d]) for d in s[i + 1 : j]) or "0"
            number, single = float(f"{int(number)}.{decimals}"), False
            i = j
            continue
        elif ch in _SMALL_UNITS:
            section += (1.0 if number is None else number) * _SMALL_UNITS[ch]
            number, last_unit, seen = None, _SMALL_UNITS[ch], True
        elif ch in _BIG_UNITS:
            unit = _BIG_UNITS[ch]
            value = section + (number or 0.0)
            total = (total + value) * unit if unit > 10_000 else total + value * unit
            section, number, last_unit = 0.0, None, unit
        else:
            return None
        i += 1
    if not seen:
        return None
    if number is not None and single and last_unit >= 10:
        number *= last_unit / 10  # colloquial tail: 一万二, 三千五, 两百五, 3万5
    return total + section + (number or 0.0)


def parse_number(text: str) -> float | None:
    """Read a number written in digits, Chinese numerals or a mix: 三万五千, 3.5万, 35,000元 → 35000."""
    s = _UNIT_STRIP.sub("", text)
    if not s:
        return None
    value = _parse_cn(s)
    if value is not None:
        return value
    import cn2an  # unusual forms only: cn2an is slow (it compiles regexes per call)

    try:
        return float(cn2an.cn2an(s, "smart"))
    except (ValueError, KeyError, IndexError, TypeError):
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
