"""The rule pack: YAML → schema check → typed model → semantic checks.

A pack that fails any step raises ``RulePackError`` naming the rule (or "pack") and the reason,
so an operator can fix it; the engine never runs a half-valid pack.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from datetime import timedelta, timezone, tzinfo
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jsonschema
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from callqc.models import Severity
from callqc.rules.regexcheck import check_regex
from callqc.textnorm import normalize_text

_PACK_DIR_ENV = "CALLQC_RULEPACKS_DIR"
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def rulepacks_dir() -> Path:
    """Folder holding ``default.yaml`` and the schema (``$CALLQC_RULEPACKS_DIR`` overrides)."""
    env = os.environ.get(_PACK_DIR_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[2] / "rulepacks"


def default_pack_path() -> Path:
    return rulepacks_dir() / "default.yaml"


def schema_path() -> Path:
    return rulepacks_dir() / "rulepack.schema.json"


class RulePackError(ValueError):
    """A pack that cannot be used: ``where`` is ``rule <id>`` or ``pack``."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason

    @classmethod
    def for_rule(cls, rule_id: str, reason: str) -> RulePackError:
        return cls(f"rule {rule_id}", reason)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class PatternSet(_Model):
    phrases: tuple[str, ...] = ()
    regexes: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.phrases and not self.regexes


class Negation(_Model):
    window: int = 6
    window_en: int = 24
    words: tuple[str, ...] = ()
    not_negation: tuple[str, ...] = ()


class Quotation(_Model):
    markers: tuple[str, ...] = ()
    window: int = 12
    echo_segments: int = 2


class Pinyin(_Model):
    min_chars: int = 2
    confidence: float = 0.7


class Defaults(_Model):
    negation: Negation = Negation()
    quotation: Quotation = Quotation()
    pinyin: Pinyin = Pinyin()
    unknown_role_confidence: float = 0.8
    max_findings_per_rule: int = 20


class Near(PatternSet):
    within: int


class Window(_Model):
    first_s: float | None = None
    last_s: float | None = None


class Group(PatternSet):
    name: str


class Banned(_Model):
    start: str = Field(alias="from")
    end: str = Field(alias="to")


class Tolerance(_Model):
    ratio: float = 0.01
    absolute: float = 1.0


class When(_Model):
    outsourced: bool | None = None


RuleType = Literal["keyword", "required", "sequence", "call_hours", "attempts", "ledger"]
Scope = Literal["agent", "customer", "any"]


class Rule(_Model):
    """One check of COMPLIANCE_RULES.md, as a compliance officer reads it in the YAML."""

    id: str
    name: str
    type: RuleType
    severity: Severity
    category: str
    mode: str = ""
    priority: str | None = None
    scope: Scope = "agent"
    source: str = ""
    description: str = ""
    enabled: bool = True
    confidence: float = 1.0
    phrases: tuple[str, ...] = ()
    regexes: tuple[str, ...] = ()
    pinyin: bool = False
    negation: bool | Negation | None = None
    quotation: bool | None = None
    exceptions: tuple[str, ...] = ()
    exception_regexes: tuple[str, ...] = ()
    near: Near | None = None
    when: When | None = None
    window: Window | None = None
    groups: tuple[Group, ...] = ()
    accept_principal: bool = False
    prerequisite: PatternSet | None = None
    banned: Banned | None = None
    timezone: str | None = None
    max_per_day: int | None = None
    field: Literal["amount_due", "overdue_days"] | None = None
    lookahead: int = 12
    tolerance: Tolerance = Tolerance()

    @property
    def triggers(self) -> PatternSet:
        return PatternSet(phrases=self.phrases, regexes=self.regexes)

    @property
    def negation_on(self) -> bool:
        """Negation guards default on for keyword rules only."""
        if self.negation is None:
            return self.type == "keyword"
        return self.negation is not False

    @property
    def quotation_on(self) -> bool:
        """Quotation guards default on for agent keyword rules."""
        if self.quotation is None:
            return self.type == "keyword" and self.scope == "agent"
        return self.quotation

    def all_groups(self) -> tuple[Group, ...]:
        """required: the top-level phrases/regexes form one more group named after the rule."""
        extra = (Group(name=self.name, phrases=self.phrases, regexes=self.regexes),)
        return self.groups + (extra if self.phrases or self.regexes else ())


class RulePack(_Model):
    version: str
    name: str = ""
    description: str = ""
    defaults: Defaults = Defaults()
    rules: tuple[Rule, ...]
    sha256: str = ""

    def rule(self, rule_id: str) -> Rule:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)


@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(schema_path().read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _where(data: Any, path: list[Any]) -> tuple[str, str]:
    """Name the rule a schema error sits in, and the field path inside it."""
    if len(path) >= 2 and path[0] == "rules" and isinstance(path[1], int):
        rule = data["rules"][path[1]]
        rule_id = rule.get("id") if isinstance(rule, dict) else None
        where = f"rule {rule_id}" if isinstance(rule_id, str) else f"rule #{path[1] + 1}"
        return where, ".".join(str(p) for p in path[2:])
    return "pack", ".".join(str(p) for p in path)


def _schema_check(data: Any) -> None:
    errors = sorted(_validator().iter_errors(data), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    if not errors:
        return
    err = errors[0]
    if err.context:  # oneOf / anyOf: the deepest sub-error says more
        err = max(err.context, key=lambda e: len(e.absolute_path))
    where, field = _where(data, list(err.absolute_path))
    raise RulePackError(where, f"{field}: {err.message}" if field else err.message)


def parse_timezone(name: str) -> tzinfo:
    """``Asia/Shanghai`` or ``+08:00`` → tzinfo."""
    m = re.fullmatch(r"([+-])(\d{2}):?(\d{2})", name)
    if m:
        sign = 1 if m.group(1) == "+" else -1
        return timezone(sign * timedelta(hours=int(m.group(2)), minutes=int(m.group(3))))
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def _pattern_sets(rule: Rule) -> list[tuple[str, PatternSet]]:
    sets = [("", rule.triggers), ("exception ", PatternSet(phrases=rule.exceptions, regexes=rule.exception_regexes))]
    if rule.near:
        sets.append(("near ", rule.near))
    if rule.prerequisite:
        sets.append(("prerequisite ", rule.prerequisite))
    sets.extend((f"group {g.name!r} ", g) for g in rule.groups)
    return sets


def _semantic_check(pack: RulePack) -> None:
    seen: set[str] = set()
    for rule in pack.rules:
        if rule.id in seen:
            raise RulePackError("pack", f"rule id {rule.id} is used twice")
        seen.add(rule.id)
        fail = lambda reason, rid=rule.id: RulePackError.for_rule(rid, reason)  # noqa: E731
        for label, pset in _pattern_sets(rule):
            for phrase in pset.phrases:
                if not normalize_text(phrase):
                    raise fail(f"{label}phrase {phrase!r} is empty after normalisation")
            for n, regex in enumerate(pset.regexes, 1):
                problem = check_regex(regex)
                if problem:
                    raise fail(f"{label}pattern {n} {problem}")
        for group in rule.groups:
            if group.empty:
                raise fail(f"group {group.name!r} has no phrases or regexes")
        if rule.type == "call_hours" and rule.banned:
            if rule.banned.start == rule.banned.end:
                raise fail("banned.from and banned.to are equal (empty window)")
            if rule.timezone:
                try:
                    parse_timezone(rule.timezone)
                except ValueError as exc:
                    raise fail(str(exc)) from None
        if rule.near and rule.near.empty:
            raise fail("near has no phrases or regexes")
        if rule.prerequisite and rule.prerequisite.empty:
            raise fail("prerequisite has no phrases or regexes")
    for label, words in (
        ("negation word", pack.defaults.negation.words),
        ("quotation marker", pack.defaults.quotation.markers),
    ):
        for word in words:
            if not normalize_text(word):
                raise RulePackError("pack", f"{label} {word!r} is empty after normalisation")


def _read(source: Path | str | bytes) -> bytes:
    if isinstance(source, Path):
        try:
            return source.read_bytes()
        except OSError as exc:
            raise RulePackError("pack", f"cannot read {source}: {exc.strerror or exc}") from None
    if isinstance(source, str):
        return source.encode("utf-8")
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source)
    raise RulePackError("pack", f"unsupported source type {type(source).__name__}")


def load_rule_pack(source: Path | str | bytes) -> RulePack:
    """Parse and validate a pack from a file path, YAML text, or bytes (e.g. fetched from S3)."""
    raw = _read(source)
    try:
        data = yaml.load(raw, Loader=_YAML_LOADER)  # a safe loader (the C one when built)
    except yaml.YAMLError as exc:
        raise RulePackError("pack", f"not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        hint = " (a str is YAML text: pass a Path to read a file)" if isinstance(source, str) else ""
        raise RulePackError("pack", f"top level must be a mapping with version and rules{hint}")
    _schema_check(data)
    try:
        pack = RulePack.model_validate({**data, "sha256": hashlib.sha256(raw).hexdigest()})
    except ValidationError as exc:  # the schema should have caught it; name the place anyway
        first = exc.errors()[0]
        where, field = _where(data, list(first["loc"]))
        raise RulePackError(where, f"{field}: {first['msg']}") from None
    _semantic_check(pack)
    return pack
