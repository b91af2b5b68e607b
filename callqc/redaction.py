"""Personal data in transcripts: find it and mask it, character for character.

What is found (JR/T 0171-2020 C2 data in collection calls):

- mainland resident ID numbers: 18 characters, a valid region digit, a real birth date and the
  ISO 7064 MOD 11-2 check character (``0-9`` or ``X``; spoken ``叉``);
- mobile numbers: 11 digits ``1[3-9]xxxxxxxxx``, optionally after ``+86`` / ``0086`` / ``86``;
- bank-card numbers: 16-19 digits that pass the Luhn check;
- e-mail addresses, written (``a.b@qq.com``) or spoken (``zhangsan艾特qq点com``);
- optionally, names the caller supplies (the customer's name from the ledger, say).

Spoken digits count as digits: Arabic, full-width, Chinese numerals (``零〇一幺二两三四五六七拐八九勾``),
in groups separated by spaces or hyphens (``138 1234 5678``, ``一三八，一二三四，五六七八``). Positional
numbers never qualify (``三万五千``, ``35000元``, ``2026年11月20日`` are not digit runs), and digit runs whose
length or check digit does not fit are left alone, so amounts, dates and case numbers stay readable.

Masks keep the length of the text (every hidden character becomes ``*``), so word timings, segment
offsets and finding spans still line up. Visible parts: a mobile keeps its first 3 and last 4 digits,
an ID number and a bank card their last 4, an e-mail the first character and the domain.

Entry points: ``find_pii(text)``, ``redact_text(text)``, ``redact_segments(segments)`` (text and
words, including numbers spoken across several words) and ``redact_report(report)`` (the copy of a
report that is stored and displayed). Text normalisation of ``callqc.textnorm`` is not used: it
drops characters, and masking must keep offsets in the original text.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import TYPE_CHECKING

from callqc.models import Finding, Segment

if TYPE_CHECKING:
    from callqc.report import Report

__all__ = [
    "PiiKind",
    "PiiMatch",
    "find_pii",
    "id_checksum_ok",
    "luhn_ok",
    "redact_findings",
    "redact_report",
    "redact_segments",
    "redact_text",
]

MASK = "*"


class PiiKind(StrEnum):
    ID_NUMBER = "id_number"
    MOBILE = "mobile"
    BANK_CARD = "bank_card"
    EMAIL = "email"
    NAME = "name"


@dataclass(frozen=True)
class PiiMatch:
    """``text[start:end]`` is personal data of ``kind``; ``value`` is its canonical form (digits, address)."""

    kind: PiiKind
    start: int
    end: int
    value: str


# ---- checks ----------------------------------------------------------------------------------

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def id_checksum_ok(number: str) -> bool:
    """An 18-character mainland ID: region digit 1-8, a real birth date, and the MOD 11-2 check character."""
    number = number.upper()
    if len(number) != 18 or not number[:17].isdigit() or not (number[17].isdigit() or number[17] == "X"):
        return False
    if number[0] not in "12345678":
        return False
    try:
        born = date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return False
    if born.year < 1900 or born > date.today():
        return False
    total = sum(int(d) * w for d, w in zip(number[:17], _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11] == number[17]


def luhn_ok(number: str) -> bool:
    """The Luhn (mod 10) check used by bank cards."""
    if not number.isdigit() or len(number) < 2:
        return False
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _mobile_ok(number: str) -> bool:
    return len(number) == 11 and number[0] == "1" and number[1] in "3456789"


# ---- digit runs ------------------------------------------------------------------------------

_CN_DIGITS = {
    "零": "0", "〇": "0", "洞": "0",
    "一": "1", "幺": "1", "壹": "1",
    "二": "2", "两": "2", "贰": "2",
    "三": "3", "叁": "3",
    "四": "4", "肆": "4",
    "五": "5", "伍": "5",
    "六": "6", "陆": "6",
    "七": "7", "拐": "7", "柒": "7",
    "八": "8", "捌": "8",
    "九": "9", "勾": "9", "玖": "9",
}  # fmt: skip
_ID_X = {"X", "x", "Ｘ", "ｘ", "叉", "×"}
_SEPARATORS = {" ", "\u00a0", "\u3000", "-", "－", "—"}
_CN_SEPARATORS = {"，", ",", "、"}  # only between spoken Chinese digits (never inside 1,234,567)


def _digit(ch: str) -> str | None:
    if ch in _CN_DIGITS:
        return _CN_DIGITS[ch]
    if ch.isdigit():
        try:
            return str(unicodedata.decimal(ch))
        except ValueError:
            return None
    return None


@dataclass
class _Group:
    """Consecutive digit characters: their digits and the index of each in the text."""

    digits: str
    positions: list[int]


def _runs(text: str) -> list[list[_Group]]:
    """Runs of digit groups; a group ends at a separator, a run at anything else."""
    runs: list[list[_Group]] = []
    groups: list[_Group] = []
    current: _Group | None = None
    i, n = 0, len(text)
    while i < n:
        d = _digit(text[i])
        if d is not None:
            if current is None:
                current = _Group("", [])
                groups.append(current)
            current.digits += d
            current.positions.append(i)
            i += 1
            continue
        # a separator continues the run when a digit follows it
        if current is not None and i + 1 < n and _digit(text[i + 1]) is not None:
            cn_pair = text[i - 1] in _CN_DIGITS and text[i + 1] in _CN_DIGITS
            if text[i] in _SEPARATORS or (cn_pair and text[i] in _CN_SEPARATORS):
                current = None
                i += 1
                continue
        if groups:
            runs.append(groups)
        groups, current = [], None
        i += 1
    if groups:
        runs.append(groups)
    return runs


def _id_tail(text: str, after: int) -> int | None:
    """Index of an ID check character ``X`` right after ``after`` (one separator allowed), else None."""
    for j in (after + 1, after + 2):
        if j < len(text) and text[j] in _ID_X:
            if j == after + 2 and text[after + 1] not in _SEPARATORS:
                return None
            if j + 1 < len(text) and text[j + 1].isascii() and text[j + 1].isalpha():
                return None  # part of an English word
            return j
    return None


def _classify(digits: str, text: str, positions: list[int]) -> tuple[PiiKind, str, list[int]] | None:
    """What a candidate digit window is (ID first: an ID can pass Luhn by chance, not the reverse)."""
    n = len(digits)
    if n == 17:
        tail = _id_tail(text, positions[-1])
        if tail is not None and id_checksum_ok(digits + "X"):
            return PiiKind.ID_NUMBER, digits + "X", [*positions, tail]
        return None
    if n == 18 and id_checksum_ok(digits):
        return PiiKind.ID_NUMBER, digits, positions
    if 16 <= n <= 19 and luhn_ok(digits):
        return PiiKind.BANK_CARD, digits, positions
    if n == 11 and _mobile_ok(digits):
        return PiiKind.MOBILE, digits, positions
    for prefix in ("0086", "86"):
        if n == 11 + len(prefix) and digits.startswith(prefix) and _mobile_ok(digits[len(prefix) :]):
            return PiiKind.MOBILE, digits[len(prefix) :], positions[len(prefix) :]
    return None


def _digit_matches(text: str) -> list[tuple[PiiMatch, list[int]]]:
    found: list[tuple[PiiMatch, list[int]]] = []
    for groups in _runs(text):
        used: set[int] = set()
        # longest windows of whole groups first, so 138 1234 5678 wins over its parts
        windows = sorted(
            ((i, j) for i in range(len(groups)) for j in range(i + 1, len(groups) + 1)),
            key=lambda w: (-(sum(len(g.digits) for g in groups[w[0] : w[1]])), w[0]),
        )
        for i, j in windows:
            if any(k in used for k in range(i, j)):
                continue
            digits = "".join(g.digits for g in groups[i:j])
            if len(digits) < 11 or len(digits) > 21:
                continue
            positions = [p for g in groups[i:j] for p in g.positions]
            hit = _classify(digits, text, positions)
            if hit is None:
                continue
            kind, value, hidden = hit
            used.update(range(i, j))
            found.append((PiiMatch(kind, hidden[0], hidden[-1] + 1, value), hidden))
    return found


# ---- e-mail ----------------------------------------------------------------------------------

_TLDS = "com|cn|net|org|edu|gov|cc|io|hk|tw|co|info|biz|me|top|vip"
_EMAIL_RE = re.compile(
    r"(?<![A-Za-z0-9._%+-])([A-Za-z0-9][A-Za-z0-9._%+-]{0,63})"
    r"(\s*(?:@|＠|艾特|圈a|\bat\b)\s*)"
    rf"((?:[A-Za-z0-9-]+(?:\s*(?:\.|点|\bdot\b)\s*))+(?:{_TLDS}|[A-Za-z]{{2,6}}))"
    r"(?![A-Za-z0-9-])",
    re.IGNORECASE,
)


_SPOKEN_DOT = re.compile(r"\s*(?:点|\bdot\b)\s*", re.IGNORECASE)


def _email_matches(text: str) -> list[tuple[PiiMatch, list[int]]]:
    found = []
    for m in _EMAIL_RE.finditer(text):
        at = m.group(2).strip()
        domain = m.group(3)
        spoken = at != "@" and at != "＠"
        if spoken and not re.search(rf"(?:\.|点|dot)\s*(?:{_TLDS})$", domain, re.IGNORECASE):
            continue  # "look at this.thing" is not an address; spoken ones need a known TLD
        local_start, local_end = m.span(1)
        hidden = list(range(local_start + 1, local_end))  # keep the first character and the domain
        value = f"{m.group(1)}@{_SPOKEN_DOT.sub('.', domain)}"
        found.append((PiiMatch(PiiKind.EMAIL, m.start(), m.end(), value), hidden))
    return found


# ---- names -----------------------------------------------------------------------------------


def _name_matches(text: str, names: Iterable[str]) -> list[tuple[PiiMatch, list[int]]]:
    """Known names (given by the caller): the surname stays, the given name is hidden (张三丰 → 张**)."""
    found = []
    for name in {n.strip() for n in names if n and len(n.strip()) >= 2}:
        for m in re.finditer(re.escape(name), text):
            found.append((PiiMatch(PiiKind.NAME, m.start(), m.end(), name), list(range(m.start() + 1, m.end()))))
    return found


# ---- public API ------------------------------------------------------------------------------


def _all_matches(text: str, names: Iterable[str] = ()) -> list[tuple[PiiMatch, list[int]]]:
    matches = _digit_matches(text) + _email_matches(text) + _name_matches(text, names)
    return sorted(matches, key=lambda m: (m[0].start, m[0].end))


def find_pii(text: str, names: Iterable[str] = ()) -> list[PiiMatch]:
    """Every piece of personal data in ``text``, in order."""
    return [m for m, _hidden in _all_matches(text, names)]


def _hidden_positions(text: str, names: Iterable[str]) -> set[int]:
    hide: set[int] = set()
    for match, hidden in _all_matches(text, names):
        if match.kind == PiiKind.MOBILE:  # 138****5678: keep the first 3 and the last 4 digits
            hidden = hidden[3:-4]
        elif match.kind in (PiiKind.ID_NUMBER, PiiKind.BANK_CARD):  # keep the last 4
            hidden = hidden[:-4]
        hide.update(hidden)
    return hide


def redact_text(text: str, names: Iterable[str] = ()) -> str:
    """``text`` with personal data masked by ``*``, one for one (same length as ``text``)."""
    if not text:
        return text
    hide = _hidden_positions(text, names)
    if not hide:
        return text
    return "".join(MASK if i in hide else ch for i, ch in enumerate(text))


def redact_segments(segments: Sequence[Segment], names: Iterable[str] = ()) -> list[Segment]:
    """Copies of ``segments`` with text and words masked; a number spoken across words is found whole."""
    names = tuple(names)
    out = []
    for seg in segments:
        update: dict[str, object] = {"text": redact_text(seg.text, names)}
        if seg.words:
            joined = "".join(w.text for w in seg.words)
            masked = redact_text(joined, names)
            if masked != joined:
                words, offset = [], 0
                for word in seg.words:
                    piece = masked[offset : offset + len(word.text)]
                    offset += len(word.text)
                    words.append(word.model_copy(update={"text": piece}) if piece != word.text else word)
                update["words"] = words
        out.append(seg.model_copy(update=update))
    return out


def redact_findings(findings: Sequence[Finding], names: Iterable[str] = ()) -> list[Finding]:
    """Copies of ``findings`` with evidence and rationale masked."""
    names = tuple(names)
    return [
        f.model_copy(update={"evidence": redact_text(f.evidence, names), "rationale": redact_text(f.rationale, names)})
        for f in findings
    ]


def redact_report(report: Report, names: Iterable[str] = ()) -> Report:
    """The copy of ``report`` that is stored and displayed: transcript, findings and role cues masked."""
    names = tuple(names)
    roles = report.roles.model_copy(update={"cues": [redact_text(c, names) for c in report.roles.cues]})
    return report.model_copy(
        update={
            "transcript": redact_segments(report.transcript, names),
            "findings": redact_findings(report.findings, names),
            "roles": roles,
        }
    )


def contains_pii(text: str, names: Iterable[str] = ()) -> bool:
    return bool(_all_matches(text, names))
