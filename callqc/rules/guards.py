"""Guards that cancel a keyword hit: a negation just before it, or the agent quoting the customer."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from callqc.models import Role
from callqc.rules.pack import Negation, Quotation
from callqc.textnorm import normalize_text

if TYPE_CHECKING:
    from callqc.rules.context import CallText, RuleHit

# Where a clause ends in the original text: the negation of one clause does not reach the next.
_CLAUSE_ZH = frozenset("，。！？；,.!?;…\n\r\t \u3000\x1e")
_CLAUSE_EN = frozenset("，。！？；,.!?;…\x1e")


def word_regex(words: tuple[str, ...]) -> re.Pattern[str] | None:
    """One regex for a word list; English words only match whole words."""
    alternatives = []
    for word in sorted({normalize_text(w) for w in words if normalize_text(w)}, key=len, reverse=True):
        piece = re.escape(word)
        if word[0].isascii() and word[0].isalnum():
            piece = r"(?<![a-z0-9])" + piece
        if word[-1].isascii() and word[-1].isalnum():
            piece += r"(?![a-z0-9])"
        alternatives.append(piece)
    return re.compile("|".join(alternatives)) if alternatives else None


def _window_start(call: CallText, hit: RuleHit, width: int, english: bool) -> int:
    """Start of the look-back window: ``width`` characters, cut at the segment and clause start."""
    start = max(int(call.starts[hit.seg]), hit.start - width)
    before = call.original_between(start, hit.start)
    stops = _CLAUSE_EN if english else _CLAUSE_ZH
    for i in range(len(before) - 1, -1, -1):
        if before[i] in stops:
            return call.norm.from_original(int(call.norm.offsets[start]) + i + 1)
    return start


@dataclass(frozen=True)
class NegationGuard:
    """我们不会上门 is not a threat: a negation word shortly before the hit, in the same clause."""

    window: int
    window_en: int
    regex: re.Pattern[str] | None
    not_negation: tuple[str, ...]

    @classmethod
    def build(cls, spec: Negation) -> NegationGuard:
        exempt = tuple(sorted({normalize_text(p) for p in spec.not_negation} - {""}))
        return cls(spec.window, spec.window_en, word_regex(spec.words), exempt)

    def negated(self, call: CallText, hit: RuleHit) -> bool:
        if self.regex is None:
            return False
        english = call.text[hit.start].isascii()
        start = _window_start(call, hit, self.window_en if english else self.window, english)
        window = call.text[start : hit.start]
        for m in self.regex.finditer(window):
            if not self._exempt(call, hit.seg, start + m.start(), start + m.end()):
                return True
        return False

    def _exempt(self, call: CallText, seg: int, ns: int, ne: int) -> bool:
        """True when the negation word is part of a phrase that negates nothing (不要脸, 是不是)."""
        lo = max(int(call.starts[seg]), ns - 8)
        hi = min(int(call.ends[seg]), ne + 8)
        region = call.text[lo:hi]
        for phrase in self.not_negation:
            at = region.find(phrase)
            while at >= 0:
                if lo + at <= ns and lo + at + len(phrase) >= ne:
                    return True
                at = region.find(phrase, at + 1)
        return False


@dataclass(frozen=True)
class QuotationGuard:
    """您说我们是骗子: the agent repeating the customer's words is not the agent's own insult."""

    regex: re.Pattern[str] | None
    window: int
    echo_segments: int

    @classmethod
    def build(cls, spec: Quotation) -> QuotationGuard:
        return cls(word_regex(spec.markers), spec.window, spec.echo_segments)

    def quoted(self, call: CallText, hit: RuleHit) -> bool:
        if self.regex is not None:
            start = max(int(call.starts[hit.seg]), hit.start - self.window)
            if self.regex.search(call.text, start, hit.start):
                return True
        said = call.text[hit.start : hit.end]
        for seg in range(hit.seg - 1, max(-1, hit.seg - 1 - self.echo_segments), -1):
            if call.role(seg) != Role.AGENT and said in call.seg_text(seg):
                return True
        return False
