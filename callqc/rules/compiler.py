"""Turn a validated pack into one pattern table (for the single matcher) plus per-rule settings."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import time, tzinfo
from enum import StrEnum

from callqc.rules.guards import NegationGuard, QuotationGuard
from callqc.rules.matcher import Pattern
from callqc.rules.pack import Group, Negation, PatternSet, Rule, RulePack, parse_timezone
from callqc.rules.regexcheck import REGEX_FLAGS, fold_regex, sre_parse
from callqc.textnorm import is_cjk, normalize_text, phonetic

_ASCII_ALNUM = re.compile(r"[a-z0-9]")
_NUMERAL_CHARS = "零〇一二两三四五六七八九十百千万亿"
_NUMERALS = "0-9" + _NUMERAL_CHARS  # a regex character-class body


class PatternRole(StrEnum):
    TRIGGER = "trigger"
    NEAR = "near"
    EXCEPTION = "exception"
    PREREQUISITE = "prerequisite"
    GROUP = "group"


@dataclass(frozen=True)
class Target:
    """Which rule a pattern feeds, and as what."""

    rule: int
    role: PatternRole
    group: int = 0


@dataclass
class PatternInfo:
    pattern: Pattern
    label: str  # the phrase or regex as written in the pack
    phonetic: bool
    bound_left: bool  # literal starts/ends with an English letter or digit: needs a word boundary
    bound_right: bool
    origin: tuple[str, str]  # (rule id, "pattern 2") for error messages
    targets: list[Target] = field(default_factory=list)
    exact_forms: set[str] = field(default_factory=set)  # phonetic literals: the phrases as written

    def is_exact(self, text: str, start: int, end: int) -> bool:
        """A phonetic-layer hit that is also the phrase as written (not a homophone)."""
        return text[start:end] in self.exact_forms


@dataclass(frozen=True)
class LedgerContext:
    """ledger rules: where the context phrase starts, given where the number after it starts.

    The matcher reports only the end of a context-then-numeral match (finding its start costs a
    Python regex search per hit, and context words are frequent); the start is located here, only
    for hits that need it (a finding, an exception nearby).
    """

    exact: re.Pattern[str]  # the whole context-then-numeral regex, anchored at the end
    phonetic: re.Pattern[str] | None
    reach: int  # how far back from the numeral a context can start

    def locate(self, call_text: str, phonetic_text: str, line_start: int, end: int) -> tuple[int, bool]:
        """``(start, homophone?)`` of the context-then-numeral match that ends at ``end``."""
        lo = max(line_start, end - self.reach)
        m = self.exact.search(call_text, lo, end)
        if m is not None:
            return m.start(), False
        if self.phonetic is not None:
            m = self.phonetic.search(phonetic_text, lo, end)
            if m is not None:
                return m.start(), True
        return end - 1, True


@dataclass(frozen=True)
class CompiledRule:
    index: int
    rule: Rule
    negation: NegationGuard | None
    quotation: QuotationGuard | None
    groups: tuple[Group, ...] = ()
    banned: tuple[time, time] | None = None
    tz: tzinfo | None = None
    context: LedgerContext | None = None


@dataclass
class CompiledPack:
    pack: RulePack
    rules: list[CompiledRule]
    infos: list[PatternInfo]
    has_phonetic: bool

    @property
    def patterns(self) -> list[Pattern]:
        return [info.pattern for info in self.infos]


class _Table:
    def __init__(self, min_pinyin_chars: int) -> None:
        self.infos: list[PatternInfo] = []
        self._index: dict[tuple[str, bool, bool, bool], int] = {}
        self._min_pinyin = min_pinyin_chars

    def _add(
        self,
        expr: str,
        literal: bool,
        phon: bool,
        label: str,
        origin: tuple[str, str],
        target: Target,
        first_only: bool = False,
        needs_start: bool = True,
    ) -> PatternInfo:
        key = (expr, literal, phon, first_only)
        pid = self._index.get(key)
        if pid is None:
            pid = len(self.infos)
            self._index[key] = pid
            left = literal and bool(_ASCII_ALNUM.match(expr[0]))
            right = literal and bool(_ASCII_ALNUM.match(expr[-1]))
            pattern = Pattern(pid, expr, literal, first_only, needs_start, phon)
            self.infos.append(PatternInfo(pattern, label, phon, left, right, origin))
        if target not in self.infos[pid].targets:
            self.infos[pid].targets.append(target)
        return self.infos[pid]

    def add_set(self, rule: Rule, pset: PatternSet, target: Target, label: str, first_only: bool = False) -> None:
        for phrase in pset.phrases:
            norm = normalize_text(phrase)
            origin = (rule.id, f"{label}phrase {phrase!r}")
            if rule.pinyin and sum(map(is_cjk, norm)) >= self._min_pinyin:
                # The phonetic form matches the exact phrase too: one pattern, exactness checked per hit.
                info = self._add(phonetic(norm), True, True, phrase, origin, target, first_only)
                info.exact_forms.add(norm)
            else:
                self._add(norm, True, False, phrase, origin, target, first_only)
        for n, regex in enumerate(pset.regexes, 1):
            origin = (rule.id, f"{label}pattern {n}")
            self._add(fold_regex(regex), False, False, regex, origin, target, first_only)

    def add_ledger(self, rule: Rule, target: Target) -> LedgerContext:
        """One regex per layer: a context phrase followed, within ``lookahead``, by a numeral.

        Context words (欠款, 逾期, 应还 …) are everywhere in a collection call; matching them only
        where a number follows keeps the matcher's hit count (and so its cost) low.
        """
        phrases = [normalize_text(p) for p in rule.phrases]
        phon_ok = [p for p in phrases if rule.pinyin and sum(map(is_cjk, p)) >= self._min_pinyin]
        exact_alt = [re.escape(p) for p in phrases] + [f"(?:{fold_regex(r)})" for r in rule.regexes]
        exact_ctx = "|".join(exact_alt)
        tail = f"[^\\n{_NUMERALS}]{{0,{rule.lookahead}}}[{_NUMERALS}]"
        origin = (rule.id, "context phrases")
        exact = f"(?:{exact_ctx}){tail}"
        widest = sre_parse.parse(exact, REGEX_FLAGS).getwidth()[1]
        reach = min(widest, 64 + rule.lookahead)
        anchored = re.compile(exact + "\\Z", REGEX_FLAGS)
        if not phon_ok:
            self._add(exact, False, False, "context", origin, target, needs_start=False)
            return LedgerContext(anchored, None, reach)
        rest = [re.escape(p) for p in phrases if p not in phon_ok] + [f"(?:{fold_regex(r)})" for r in rule.regexes]
        if rest:
            self._add(f"(?:{'|'.join(rest)}){tail}", False, False, "context", origin, target, needs_start=False)
        numerals = _NUMERALS + "".join(sorted(set(phonetic(_NUMERAL_CHARS)) - set(_NUMERAL_CHARS)))
        phon_ctx = "|".join(re.escape(phonetic(p)) for p in phon_ok)
        phon_tail = f"[^\\n{numerals}]{{0,{rule.lookahead}}}[{numerals}]"
        self._add(f"(?:{phon_ctx}){phon_tail}", False, True, "context", origin, target, needs_start=False)
        return LedgerContext(anchored, re.compile(f"(?:{phon_ctx}){phon_tail}\\Z", REGEX_FLAGS), reach)


def _merged_negation(pack: RulePack, rule: Rule) -> Negation:
    base = pack.defaults.negation
    if isinstance(rule.negation, Negation):
        return base.model_copy(update=rule.negation.model_dump(exclude_unset=True))
    return base


def _hhmm(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def _first_only(rule: Rule, role: PatternRole) -> bool:
    """Whether the rule only needs the agent's first use of a pattern (scanned agent text first).

    required (first N seconds / whole call) and sequence rules look for the earliest agent hit;
    any guard that could cancel that first hit would need the later ones, so guarded rules do not.
    """
    if rule.scope != "agent" or rule.negation_on or rule.exceptions or rule.exception_regexes or rule.near:
        return False
    if rule.type == "required":
        return role is PatternRole.GROUP and not (rule.window and rule.window.last_s)
    return rule.type == "sequence" and role in (PatternRole.TRIGGER, PatternRole.PREREQUISITE)


def compile_pack(pack: RulePack) -> CompiledPack:
    """Collect every pattern of every enabled rule into one deduplicated table."""
    table = _Table(pack.defaults.pinyin.min_chars)
    compiled: list[CompiledRule] = []
    quotation = QuotationGuard.build(pack.defaults.quotation)
    for index, rule in enumerate(pack.rules):
        if not rule.enabled:
            continue
        groups: tuple[Group, ...] = ()
        context = None
        if rule.type == "required":
            groups = rule.all_groups()
            first = _first_only(rule, PatternRole.GROUP)
            for g, group in enumerate(groups):
                table.add_set(rule, group, Target(index, PatternRole.GROUP, g), f"group {group.name!r} ", first)
        elif rule.type == "ledger":
            context = table.add_ledger(rule, Target(index, PatternRole.TRIGGER))
        else:
            first = _first_only(rule, PatternRole.TRIGGER)
            table.add_set(rule, rule.triggers, Target(index, PatternRole.TRIGGER), "", first)
        exceptions = PatternSet(phrases=rule.exceptions, regexes=rule.exception_regexes)
        table.add_set(rule, exceptions, Target(index, PatternRole.EXCEPTION), "exception ")
        if rule.near:
            table.add_set(rule, rule.near, Target(index, PatternRole.NEAR), "near ")
        if rule.prerequisite:
            first = _first_only(rule, PatternRole.PREREQUISITE)
            table.add_set(rule, rule.prerequisite, Target(index, PatternRole.PREREQUISITE), "prerequisite ", first)
        negation = NegationGuard.build(_merged_negation(pack, rule)) if rule.negation_on else None
        banned = (_hhmm(rule.banned.start), _hhmm(rule.banned.end)) if rule.banned else None
        tz = parse_timezone(rule.timezone) if rule.timezone else None
        compiled.append(
            CompiledRule(index, rule, negation, quotation if rule.quotation_on else None, groups, banned, tz, context)
        )
    has_phonetic = any(info.phonetic for info in table.infos)
    return CompiledPack(pack, compiled, table.infos, has_phonetic)
