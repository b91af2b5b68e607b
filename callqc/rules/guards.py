"""Guards that cancel a keyword hit: a negation just before it (or a denial just after), or the agent
quoting the customer."""

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

# A negation in a condition does not reach its consequence: 不能按时还款我们就上门收拾你 is a threat.
_CONSEQUENCE_ZH = re.compile("就|的话|否则|不然|要不然|那么")
_CONSEQUENCE_EN = re.compile(r"(?<![a-z])(then|otherwise|or else)(?![a-z])")
# A hit coordinated with a negated one shares its negation: "we will not call your boss or tell your
# family", 不会联系你的同事或者告诉你家人. The look-back then reaches this many windows back.
_COORDINATED_ZH = ("或者", "或是", "还有", "以及", "或")
_COORDINATED_EN = ("or", "nor")
_COORDINATION_REACH = 3
# A short clause right after the hit that only denies it: 找人收拾你？绝对不会的 / "Hurt you? Of course not."
_DENIAL_TAIL_ZH = frozenset("的啦了呢啊吧哦呀嘛事")
# The hit's clause may end a few characters later: 打断你｜的腿吗？不会的 / "hurt you｜badly? No.".
_CLAUSE_REST = 4
_CLAUSE_REST_EN = 12
_DENIAL_LEAD_ZH = 3  # 当然不会 / 我们绝对不会: a few characters may come before the negation word
_DENIAL_WORDS_EN = 4
_DENIAL_ALONE_EN = frozenset({"no", "nope", "no no"})


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
        width = self.window_en if english else self.window
        if self._coordinated(call, hit, english):
            width *= _COORDINATION_REACH
        start = _window_start(call, hit, width, english)
        window = call.text[start : hit.start]
        consequence = _CONSEQUENCE_EN if english else _CONSEQUENCE_ZH
        for m in self.regex.finditer(window):
            if consequence.search(window, m.end()):
                continue  # 没钱就去借网贷: the negation belongs to the condition
            if not self._exempt(call, hit.seg, start + m.start(), start + m.end()):
                return True
        return self._denied_after(call, hit, english)

    @staticmethod
    def _coordinated(call: CallText, hit: RuleHit, english: bool) -> bool:
        """The hit is the second of two coordinated phrases (… or tell your family, …或者告诉你家人)."""
        before = call.text[max(int(call.starts[hit.seg]), hit.start - 5) : hit.start]
        if english:
            words = before.rstrip().rsplit(" ", 1)
            return before.endswith(" ") and words[-1] in _COORDINATED_EN
        return before.endswith(_COORDINATED_ZH)

    def _denied_after(self, call: CallText, hit: RuleHit, english: bool) -> bool:
        """The hit's clause is followed by a clause that is only a denial: 收拾你？绝对不会的 / "Of course not."."""
        assert self.regex is not None
        # Original text from just after the hit's last character (the punctuation after it included).
        after = call.original_between(hit.end - 1, int(call.ends[hit.seg]))[1:]
        stops = _CLAUSE_EN if english else _CLAUSE_ZH
        clauses: list[str] = []
        current = rest = ""
        seen_stop = False
        for ch in after:
            if ch in stops and not (english and ch == " "):
                if current.strip():
                    clauses.append(current)
                current = ""
                seen_stop = True
                if len(clauses) == 2:
                    break
            elif seen_stop:
                current += ch
            else:
                rest += ch
                if len(normalize_text(rest)) > (_CLAUSE_REST_EN if english else _CLAUSE_REST):
                    return False  # the hit's own clause goes on: 收拾你还不会手软 is no denial
        else:
            if current.strip():
                clauses.append(current)
        if not clauses:
            return False
        first = normalize_text(clauses[0])
        if english and first in _DENIAL_ALONE_EN:  # "Hurt you? No, we won't." / "No."
            if len(clauses) == 1:
                return True
            first = normalize_text(clauses[1])
        return self._is_denial(first, english)

    def _is_denial(self, clause: str, english: bool) -> bool:
        """The clause is a negation word, after a few words/characters and before only particles."""
        assert self.regex is not None
        if english:
            words = clause.split(" ")
            if len(words) > _DENIAL_WORDS_EN:
                return False
            starts = [0] + [k + 1 for k, ch in enumerate(clause) if ch == " "]
        else:
            while clause and clause[-1] in _DENIAL_TAIL_ZH and len(clause) > 2:
                clause = clause[:-1]
            starts = list(range(min(_DENIAL_LEAD_ZH, len(clause) - 1) + 1))
        for at in starts:
            m = self.regex.fullmatch(clause, at)
            if m is not None:
                return not self.exempt_span(clause, m.start(), m.end())
        return False

    def exempt_span(self, text: str, ns: int, ne: int) -> bool:
        """True when a phrase that negates nothing (不要脸, 是不是) covers the negation word ``text[ns:ne]``."""
        for phrase in self.not_negation:
            at = text.find(phrase)
            while at >= 0:
                if at <= ns and at + len(phrase) >= ne:
                    return True
                at = text.find(phrase, at + 1)
        return False

    def _exempt(self, call: CallText, seg: int, ns: int, ne: int) -> bool:
        """True when the negation word is part of a phrase that negates nothing (不要脸, 是不是)."""
        lo = max(int(call.starts[seg]), ns - 8)
        hi = min(int(call.ends[seg]), ne + 8)
        return self.exempt_span(call.text[lo:hi], ns - lo, ne - lo)


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
