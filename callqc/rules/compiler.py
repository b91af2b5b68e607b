"""Turn a validated pack into one pattern table (for the single matcher) plus per-rule settings."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import time, tzinfo
from enum import StrEnum

from callqc.rules.guards import NegationGuard, QuotationGuard
from callqc.rules.matcher import Pattern
from callqc.rules.pack import Group, Negation, PatternSet, Rule, RulePack, parse_timezone
from callqc.rules.regexcheck import fold_regex
from callqc.textnorm import is_cjk, normalize_text, phonetic

_ASCII_ALNUM = re.compile(r"[a-z0-9]")


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


@dataclass(frozen=True)
class CompiledRule:
    index: int
    rule: Rule
    negation: NegationGuard | None
    quotation: QuotationGuard | None
    groups: tuple[Group, ...] = ()
    banned: tuple[time, time] | None = None
    tz: tzinfo | None = None


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
        self._index: dict[tuple[str, bool, bool], int] = {}
        self._min_pinyin = min_pinyin_chars

    def _add(self, expr: str, literal: bool, phon: bool, label: str, origin: tuple[str, str], target: Target) -> None:
        key = (expr, literal, phon)
        pid = self._index.get(key)
        if pid is None:
            pid = len(self.infos)
            self._index[key] = pid
            left = literal and bool(_ASCII_ALNUM.match(expr[0]))
            right = literal and bool(_ASCII_ALNUM.match(expr[-1]))
            self.infos.append(PatternInfo(Pattern(pid, expr, literal), label, phon, left, right, origin))
        if target not in self.infos[pid].targets:
            self.infos[pid].targets.append(target)

    def add_set(self, rule: Rule, pset: PatternSet, target: Target, label: str) -> None:
        for phrase in pset.phrases:
            norm = normalize_text(phrase)
            origin = (rule.id, f"{label}phrase {phrase!r}")
            self._add(norm, True, False, phrase, origin, target)
            if rule.pinyin and sum(map(is_cjk, norm)) >= self._min_pinyin:
                self._add(phonetic(norm), True, True, phrase, origin, target)
        for n, regex in enumerate(pset.regexes, 1):
            self._add(fold_regex(regex), False, False, regex, (rule.id, f"{label}pattern {n}"), target)


def _merged_negation(pack: RulePack, rule: Rule) -> Negation:
    base = pack.defaults.negation
    if isinstance(rule.negation, Negation):
        return base.model_copy(update=rule.negation.model_dump(exclude_unset=True))
    return base


def _hhmm(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def compile_pack(pack: RulePack) -> CompiledPack:
    """Collect every pattern of every enabled rule into one deduplicated table."""
    table = _Table(pack.defaults.pinyin.min_chars)
    compiled: list[CompiledRule] = []
    quotation = QuotationGuard.build(pack.defaults.quotation)
    for index, rule in enumerate(pack.rules):
        if not rule.enabled:
            continue
        groups: tuple[Group, ...] = ()
        if rule.type == "required":
            groups = rule.all_groups()
            for g, group in enumerate(groups):
                table.add_set(rule, group, Target(index, PatternRole.GROUP, g), f"group {group.name!r} ")
        else:
            table.add_set(rule, rule.triggers, Target(index, PatternRole.TRIGGER), "")
        exceptions = PatternSet(phrases=rule.exceptions, regexes=rule.exception_regexes)
        table.add_set(rule, exceptions, Target(index, PatternRole.EXCEPTION), "exception ")
        if rule.near:
            table.add_set(rule, rule.near, Target(index, PatternRole.NEAR), "near ")
        if rule.prerequisite:
            table.add_set(rule, rule.prerequisite, Target(index, PatternRole.PREREQUISITE), "prerequisite ")
        negation = NegationGuard.build(_merged_negation(pack, rule)) if rule.negation_on else None
        banned = (_hhmm(rule.banned.start), _hhmm(rule.banned.end)) if rule.banned else None
        tz = parse_timezone(rule.timezone) if rule.timezone else None
        compiled.append(
            CompiledRule(index, rule, negation, quotation if rule.quotation_on else None, groups, banned, tz)
        )
    has_phonetic = any(info.phonetic for info in table.infos)
    return CompiledPack(pack, compiled, table.infos, has_phonetic)
