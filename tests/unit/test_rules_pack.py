"""Rule pack loading: schema and semantic errors name the rule and the reason; hot reload keeps the old pack."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from callqc.rules import (
    EngineHolder,
    RuleEngine,
    RulePack,
    RulePackError,
    default_pack_path,
    load_rule_pack,
    transcript_from_turns,
)
from tests.unit.rule_backends import HYPERSCAN_BACKENDS

MINIMAL = """
version: "1.0.0"
rules:
  - id: X01
    name: 测试
    type: keyword
    severity: S1
    category: prohibited
    phrases: [打断你的腿]
"""


def _pack_with(rule_fields: str) -> str:
    """MINIMAL with extra lines appended to its rule."""
    return MINIMAL.rstrip() + "\n" + "\n".join("    " + line for line in rule_fields.strip().splitlines()) + "\n"


def test_default_pack_loads_from_every_source_type() -> None:
    path = default_pack_path()
    from_path = load_rule_pack(path)
    assert from_path.version == "2026.11.2"
    assert load_rule_pack(path.read_text(encoding="utf-8")).version == from_path.version
    assert load_rule_pack(path.read_bytes()).sha256 == from_path.sha256
    assert len(from_path.sha256) == 64
    assert from_path.rule("F15").banned is not None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_pack_with("regexes: ['打(断']"), "rule X01: pattern 1 is not a valid regex: missing )"),
        (_pack_with("regexes: ['ok', '(?<=我)打']"), "rule X01: pattern 2 uses a look-ahead/look-behind"),
        (_pack_with(r"regexes: ['(打)\1']"), "rule X01: pattern 1 uses a back-reference"),
        (_pack_with("regexes: ['^打']"), "rule X01: pattern 1 uses ^, $"),
        (_pack_with("regexes: ['打*']"), "rule X01: pattern 1 can match empty text"),
        (_pack_with("regexes: ['打，你']"), "rule X01: pattern 1 contains characters removed by normalisation"),
        (_pack_with("exceptions: ['，。']"), "rule X01: exception phrase '，。' is empty after normalisation"),
        (MINIMAL.replace("severity: S1", "severity: S9"), "rule X01: severity: 'S9' is not one of"),
        (MINIMAL.replace("type: keyword", "type: magic"), "rule X01: type: 'magic' is not one of"),
        (MINIMAL.replace("    phrases: [打断你的腿]\n", ""), "rule X01"),
        (_pack_with("colour: red"), "rule X01: Additional properties are not allowed ('colour'"),
        (MINIMAL.replace('version: "1.0.0"', "version: 1.0"), "pack: version: 1.0 is not of type 'string'"),
        (MINIMAL.replace('version: "1.0.0"\n', ""), "pack: 'version' is a required property"),
        (MINIMAL + MINIMAL[MINIMAL.index("  - id") :], "pack: rule id X01 is used twice"),
        ("rules: [", "pack: not valid YAML"),
        ("- just a list", "pack: top level must be a mapping"),
    ],
)
def test_bad_pack_names_rule_and_reason(text: str, message: str) -> None:
    with pytest.raises(RulePackError) as err:
        load_rule_pack(text)
    assert message in str(err.value)


def test_metadata_rule_errors() -> None:
    base = """
version: "1.0"
rules:
  - id: F15
    name: 时段
    type: call_hours
    severity: S0
    category: prohibited
"""
    with pytest.raises(RulePackError, match="rule F15: 'banned' is a required property"):
        load_rule_pack(base)
    with pytest.raises(RulePackError, match=r"rule F15: banned.from: 1320 is not of type 'string'"):
        load_rule_pack(base + "    banned: {from: 22:00, to: '08:00'}\n")  # unquoted YAML 1.1 sexagesimal
    with pytest.raises(RulePackError, match="rule F15: unknown time zone 'Mars/Olympus'"):
        load_rule_pack(base + "    banned: {from: '22:00', to: '08:00'}\n    timezone: Mars/Olympus\n")
    with pytest.raises(RulePackError, match=r"rule F15: banned\.from and banned\.to are equal"):
        load_rule_pack(base + "    banned: {from: '22:00', to: '22:00'}\n")


def test_required_rule_needs_a_window() -> None:
    text = MINIMAL.replace("type: keyword", "type: required")
    with pytest.raises(RulePackError, match="rule X01: 'window' is a required property"):
        load_rule_pack(text)
    assert load_rule_pack(_pack_with("window: {first_s: 30}").replace("type: keyword", "type: required"))


@pytest.mark.parametrize("backend", HYPERSCAN_BACKENDS)
def test_pattern_the_matcher_refuses_is_named_at_compile_time(backend: str) -> None:
    pack = load_rule_pack(_pack_with("regexes: [ok, 'ba{0,100000}']"))  # valid for Python re
    with pytest.raises(RulePackError, match=r"rule X01: pattern 2 is not supported by the matcher: Bounded repeat"):
        RuleEngine(pack, backend=backend)


def test_rule_defaults() -> None:
    pack = load_rule_pack(default_pack_path())
    assert pack.rule("F01").negation_on and pack.rule("F01").quotation_on
    assert not pack.rule("C01").negation_on  # self-harm: recall first
    assert not pack.rule("C02").quotation_on  # customer scope: the agent does not quote itself
    assert not pack.rule("R05").negation_on
    assert pack.defaults.negation.window == 10


def _call_with_threat() -> object:
    return transcript_from_turns([("agent", "再不还钱我找人打断你的腿。")])


def test_hot_reload_swaps_pack_and_keeps_old_one_on_error(tmp_path: Path) -> None:
    holder = EngineHolder(MINIMAL)
    assert holder.version == "1.0.0"
    assert [f.rule_id for f in holder.evaluate(_call_with_threat())] == ["X01"]

    new = MINIMAL.replace('"1.0.0"', '"1.1.0"').replace("打断你的腿", "找人")
    pack = holder.reload(new.encode("utf-8"))  # bytes, as fetched from S3
    assert isinstance(pack, RulePack) and holder.version == "1.1.0"
    assert holder.engine.pack.rules[0].phrases == ("找人",)

    broken = new.replace('"1.1.0"', '"1.2.0"').replace("phrases: [找人]", "regexes: ['(找']")
    running = holder.engine
    with pytest.raises(RulePackError, match="rule X01: pattern 1 is not a valid regex"):
        holder.reload(broken)
    assert holder.engine is running and holder.version == "1.1.0"
    assert [f.rule_id for f in holder.evaluate(_call_with_threat())] == ["X01"]

    path = tmp_path / "pack.yaml"
    path.write_text(new, encoding="utf-8")
    assert holder.reload_if_changed(path) is False  # same bytes: nothing to do
    path.write_text(new.replace('"1.1.0"', '"1.3.0"'), encoding="utf-8")
    assert holder.reload_if_changed(path) is True and holder.version == "1.3.0"


def test_disabled_rule_is_not_evaluated() -> None:
    pack = load_rule_pack(_pack_with("enabled: false"))
    assert RuleEngine(pack).evaluate(_call_with_threat()) == []


def test_schema_file_is_valid_json_schema() -> None:
    import json

    import jsonschema

    schema = json.loads((default_pack_path().parent / "rulepack.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(yaml.safe_load(default_pack_path().read_text(encoding="utf-8")), schema)
