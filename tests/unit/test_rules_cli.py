"""``callqc rules validate|check`` and the JSONL → Transcript helper."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from callqc.models import Role
from callqc.rules import default_pack_path, record_to_call
from callqc.rules.cli import rules_app

DATA = Path(__file__).resolve().parents[1] / "data" / "rules"
runner = CliRunner()


def test_validate_ok() -> None:
    result = runner.invoke(rules_app, ["validate", str(default_pack_path())])
    assert result.exit_code == 0, result.output
    assert "version 2026.11.2" in result.output and "32 rules" in result.output


def test_validate_bad_pack_exits_1_naming_the_rule(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(default_pack_path().read_text(encoding="utf-8").replace("severity: S0", "severity: S7", 1), "utf-8")
    result = runner.invoke(rules_app, ["validate", str(bad)])
    assert result.exit_code == 1
    assert "rule F01" in result.output and "S7" in result.output


def test_check_prints_hits_per_rule() -> None:
    result = runner.invoke(rules_app, ["check", str(default_pack_path()), str(DATA / "calls.jsonl")])
    assert result.exit_code == 0, result.output
    for rule_id in ("F03", "F06", "F15", "F16", "C01", "C05", "R01"):
        assert rule_id in result.output
    assert "3 calls" in result.output


def test_check_json() -> None:
    result = runner.invoke(rules_app, ["check", str(default_pack_path()), str(DATA / "calls.jsonl"), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["pack_version"] == "2026.11.2" and out["calls"] == 3
    by_call = {c["call_id"]: {f["rule_id"] for f in c["findings"]} for c in out["results"]}
    assert {"F03", "F06", "F15"} <= by_call["c1"] and "R02" not in by_call["c1"]
    assert {"C01", "F16", "R01", "R02", "R05", "R09"} <= by_call["c2"]
    assert by_call["c3"] == {"C05"}
    [f03] = [f for f in out["results"][0]["findings"] if f["rule_id"] == "F03"]
    assert (f03["start"], f03["end"], f03["evidence"]) == (12.8, 13.4, "老赖")


def test_check_reports_a_bad_line(tmp_path: Path) -> None:
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text('{"call_id": "x"}\n', encoding="utf-8")
    result = runner.invoke(rules_app, ["check", str(default_pack_path()), str(jsonl)])
    assert result.exit_code == 2 and "bad.jsonl:1" in result.output


def test_record_to_call() -> None:
    line = (DATA / "calls.jsonl").read_text(encoding="utf-8").splitlines()[0]
    call = record_to_call(line)
    assert call.call_id == "c1" and call.transcript.language == "zh"
    assert [s.role for s in call.transcript.segments][:3] == [Role.AGENT, Role.AGENT, Role.CUSTOMER]
    assert call.transcript.segments[0].id == "c1-0" and call.transcript.duration == 16.0
    assert call.metadata is not None and call.metadata.ledger is not None
    assert call.metadata.call_started_at is not None and call.metadata.call_started_at.hour == 22
    assert len(call.transcript.segments[3].words) == 8


def test_record_without_times_lays_turns_end_to_end() -> None:
    call = record_to_call({"turns": [{"speaker": "客户", "text": "喂"}, {"speaker": "坐席", "text": "您好您好"}]})
    a, b = call.transcript.segments
    assert (a.role, b.role) == (Role.CUSTOMER, Role.AGENT)
    assert a.end == b.start and call.metadata is None


@pytest.mark.parametrize("bad", ['{"turns": 3}', "[]", '{"turns": [], "metadata": {"attempts_today": -1}}'])
def test_record_errors_are_value_errors(bad: str) -> None:
    with pytest.raises(ValueError):
        record_to_call(bad)
