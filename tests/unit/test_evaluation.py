"""``callqc eval``: the labelled format, matching findings to labels, the metrics, the dev set, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from callqc.cli import app
from callqc.evaluation import (
    ALL_IDS,
    DEV_SET,
    DatasetError,
    LabelledCall,
    Reviewer,
    coverage,
    evaluate,
    load_dataset,
    match_call,
    parse_call,
    score,
)
from callqc.models import CallMetadata, Finding, JudgeSummary, Severity, Transcript
from callqc.rules import RuleEngine, default_pack_path, load_rule_pack

runner = CliRunner()


def _record(**overrides: object) -> dict:
    record = {
        "call_id": "t1",
        "language": "zh",
        "turns": [
            {"speaker": "agent", "text": "您好，我是贷后专员。", "start": 0.0, "end": 2.0},
            {"speaker": "customer", "text": "我不想活了。", "start": 2.5, "end": 4.0},
            {"speaker": "agent", "text": "你这个老赖。", "start": 4.5, "end": 6.0},
        ],
        "metadata": {"call_started_at": "2026-11-02T10:00:00+08:00", "attempts_today": 1},
        "labels": [{"rule_id": "F03", "turn": 2}, {"rule_id": "C01", "turn": 1}],
    }
    record.update(overrides)
    return record


def _finding(rule_id: str, *turns: int, call_id: str = "t1", start: float = 0.0, end: float = 0.0) -> Finding:
    return Finding(
        rule_id=rule_id,
        name=rule_id,
        severity=Severity.S1,
        segment_ids=[f"{call_id}-{t}" for t in turns],
        start=start,
        end=end,
    )


# ---- format validation ------------------------------------------------------------------------


def test_a_good_record_loads_and_builds_a_transcript() -> None:
    call = parse_call(json.dumps(_record(), ensure_ascii=False))
    transcript = call.transcript()
    assert [s.id for s in transcript.segments] == ["t1-0", "t1-1", "t1-2"]
    assert transcript.duration == 6.0 and transcript.segments[1].role == "customer"
    assert not call.compliant


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"labels": [{"rule_id": "F19", "turn": 0}]}, "labels.0.rule_id: unknown rule id 'F19'"),
        ({"labels": [{"rule_id": "f03", "turn": 0}]}, "unknown rule id 'f03'"),
        ({"labels": [{"rule_id": "F03", "turn": 3}]}, "labels[0] (F03): turn 3 is out of range (the call has 3 turns)"),
        ({"labels": [{"rule_id": "F03", "turn": -1}]}, "turn -1 is out of range"),
        ({"labels": [{"rule_id": "F03"}]}, "label F03 needs a turn index"),
        (
            {"labels": [{"rule_id": "F03", "turn": 2}, {"rule_id": "F03", "turn": 2}]},
            "labels[1]: F03 on turn 2 is labelled twice",
        ),
        (
            {"metadata": {"call_started_at": "2026-11-02T22:30:00"}},
            "metadata.call_started_at: call_started_at must carry a time zone offset",
        ),
        ({"turns": [{"speaker": "boss", "text": "x", "start": 0, "end": 1}]}, "turns.0.speaker"),
        ({"turns": [{"speaker": "agent", "text": "x", "start": 2, "end": 1}]}, "turns.0: end 1.0 is before start 2.0"),
        ({"turns": [{"speaker": "agent", "text": "x"}]}, "turns.0.start: Field required"),
        ({"turns": []}, "turns: List should have at least 1 item"),
    ],
)
def test_validation_errors_name_the_field(overrides: dict, message: str) -> None:
    with pytest.raises(DatasetError) as err:
        parse_call(_record(**overrides))
    assert message in str(err.value)


def test_call_level_labels_need_no_turn() -> None:
    call = parse_call(_record(labels=[{"rule_id": "R01"}, {"rule_id": "F15"}]))
    assert [label.turn for label in call.labels] == [None, None]


def test_load_dataset_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    good = json.dumps(_record(), ensure_ascii=False)
    path.write_text(good + "\n\n" + json.dumps(_record(call_id="t2", labels=[{"rule_id": "Z9", "turn": 0}])) + "\n")
    with pytest.raises(DatasetError, match=r"bad\.jsonl:3: labels\.0\.rule_id: unknown rule id 'Z9'"):
        load_dataset(path)
    path.write_text(good + "\n" + good + "\n")
    with pytest.raises(DatasetError, match=r"bad\.jsonl:2: call_id 't1' appears twice"):
        load_dataset(path)
    path.write_text("{not json\n")
    with pytest.raises(DatasetError, match=r"bad\.jsonl:1: not JSON"):
        load_dataset(path)


# ---- matching ---------------------------------------------------------------------------------


def _call(labels: list[dict], n: int = 4) -> LabelledCall:
    turns = [{"speaker": "agent", "text": f"第{i}句", "start": 2.0 * i, "end": 2.0 * i + 1.5} for i in range(n)]
    return parse_call(_record(turns=turns, labels=labels))


def test_turn_level_match_needs_the_labelled_turn() -> None:
    call = _call([{"rule_id": "F03", "turn": 2}])
    assert match_call(call, [_finding("F03", 2)])["F03"].tp == 1
    wrong_turn = match_call(call, [_finding("F03", 1)])["F03"]
    assert (wrong_turn.tp, wrong_turn.fp, wrong_turn.fn) == (0, 1, 1)
    assert wrong_turn.missed_turns == (2,) and wrong_turn.false_turns == ((1,),)
    other_id = match_call(call, [_finding("F01", 2)])
    assert (other_id["F03"].fn, other_id["F01"].fp) == (1, 1)


def test_duplicates_are_neither_tp_nor_fp_and_multi_turn_findings_cover_labels() -> None:
    call = _call([{"rule_id": "F03", "turn": 1}, {"rule_id": "F03", "turn": 2}])
    m = match_call(call, [_finding("F03", 1), _finding("F03", 1), _finding("F03", 3)])["F03"]
    assert (m.tp, m.fp, m.fn, m.duplicates) == (1, 1, 1, 1)
    wide = match_call(call, [_finding("F03", 1, 2)])["F03"]  # one finding citing both labelled turns
    assert (wide.tp, wide.fp, wide.fn) == (2, 0, 0)


def test_finding_without_segments_matches_by_time() -> None:
    call = _call([{"rule_id": "F17", "turn": 2}])
    assert match_call(call, [_finding("F17", start=4.2, end=4.8)])["F17"].tp == 1  # turn 2 is 4.0–5.5 s
    assert match_call(call, [_finding("F17", start=0.1, end=0.5)])["F17"].fp == 1


def test_call_level_ids_match_on_rule_id_alone() -> None:
    call = _call([{"rule_id": "R01"}, {"rule_id": "F15", "turn": 0}])
    m = match_call(call, [_finding("R01", 0, 1, 2), _finding("F15")])
    assert (m["R01"].tp, m["F15"].tp) == (1, 1)
    assert match_call(call, [])["R01"].fn == 1
    fp = match_call(_call([]), [_finding("R09", 3), _finding("R09", 3)])["R09"]
    assert (fp.tp, fp.fp, fp.duplicates) == (0, 1, 1)


# ---- metrics ----------------------------------------------------------------------------------


def test_metrics_on_a_hand_computed_example() -> None:
    """Three calls: a violation, a compliant call flagged anyway, a compliant call with a customer signal.

    F03: labels c1@1, c1@3; findings c1@1 (TP), c1@2 (FP)  → TP 1 FP 1 FN 1 → P 0.5, R 0.5
    F01: finding c2@0 (FP)                                 → P 0,   R —
    R05: label c1 (call level), finding c1                  → TP 1   → P 1,   R 1
    C02: label c3@1, no finding                            → FN 1   → P —,   R 0
    C01: finding c3@1, no label                            → FP 1   → P 0,   R —
    overall: TP 2, FP 3, FN 2 → P 0.4, R 0.5, F1 2·0.4·0.5/0.9 = 0.4444
    compliant calls: c2 (flagged by F01), c3 (only a C02 finding would not count) → FP rate 1/2
    """
    calls = [
        _call([{"rule_id": "F03", "turn": 1}, {"rule_id": "F03", "turn": 3}, {"rule_id": "R05"}]).model_copy(
            update={"call_id": "c1"}
        ),
        _call([]).model_copy(update={"call_id": "c2"}),
        _call([{"rule_id": "C02", "turn": 1}]).model_copy(update={"call_id": "c3"}),
    ]
    findings = [
        [_finding("F03", 1, call_id="c1"), _finding("F03", 2, call_id="c1"), _finding("R05", 0, call_id="c1")],
        [_finding("F01", 0, call_id="c2")],
        [_finding("C01", 1, call_id="c3")],  # a customer signal on a compliant call: not an agent FP
    ]
    result = score(calls, findings)
    by_id = {s.rule_id: s for s in result.per_id}
    assert (by_id["F03"].tp, by_id["F03"].fp, by_id["F03"].fn) == (1, 1, 1)
    assert (by_id["F03"].precision, by_id["F03"].recall, by_id["F03"].f1) == (0.5, 0.5, 0.5)
    assert (by_id["F01"].precision, by_id["F01"].recall) == (0.0, None)
    assert (by_id["R05"].precision, by_id["R05"].recall) == (1.0, 1.0)
    assert (by_id["C02"].precision, by_id["C02"].recall) == (None, 0.0)
    assert by_id["C01"].fp == 1 and by_id["F10"].f1 is None
    o = result.overall
    assert (o.tp, o.fp, o.fn, o.precision, o.recall, o.f1) == (2, 3, 2, 0.4, 0.5, 0.4444)
    groups = {g.rule_id: g for g in result.groups}
    assert (groups["prohibited"].tp, groups["prohibited"].fp, groups["prohibited"].fn) == (1, 2, 1)
    assert (groups["customer"].fp, groups["customer"].fn) == (1, 1)
    assert (result.compliant_calls, result.compliant_flagged, result.fp_rate_compliant) == (2, 1, 0.5)
    assert result.outcomes[0].missed == ["F03@3"] and result.outcomes[0].false == ["F03@2"]
    assert json.loads(result.model_dump_json())["overall"]["recall"] == 0.5
    assert [s.rule_id for s in result.worst(2)] == ["C01", "C02"]


# ---- the dev set, the harness with a fake judge, the CLI ---------------------------------------


@pytest.fixture(scope="module")
def devset() -> list[LabelledCall]:
    return load_dataset(DEV_SET)


@pytest.fixture(scope="module")
def engine() -> RuleEngine:
    return RuleEngine(load_rule_pack(default_pack_path()))


def test_dev_set_loads_and_covers_every_id(devset: list[LabelledCall]) -> None:
    assert len(devset) >= 40
    counts = coverage(devset)
    assert set(counts) == set(ALL_IDS) and len(ALL_IDS) == 35
    assert [rule_id for rule_id, n in counts.items() if n == 0] == []
    assert sum(c.language == "en" for c in devset) >= 5
    assert all(6 <= len(c.turns) <= 20 for c in devset)
    assert sum(not c.labels for c in devset) >= 5
    hard = [c for c in devset if "hard_negative" in c.tags]
    assert {"negation", "quotation", "customer_says_threat"} <= {t for c in hard for t in c.tags}
    assert all(c.compliant for c in hard)
    assert all(c.metadata.call_started_at is not None for c in devset)


class FakeJudge:
    """Stands in for ``callqc.judge.Judge``: drops one id's candidates, adds a finding for another."""

    def __init__(self, drop: str, add: str, add_turn: int) -> None:
        self.drop, self.add, self.add_turn = drop, add, add_turn
        self.seen = 0

    def review_many(
        self, calls: list[tuple[Transcript, CallMetadata, list[Finding]]]
    ) -> list[tuple[list[Finding], JudgeSummary]]:
        out = []
        for transcript, _meta, findings in calls:
            self.seen += 1
            kept = [f for f in findings if f.rule_id != self.drop]
            seg = transcript.segments[self.add_turn]
            kept.append(
                Finding(rule_id=self.add, name="judge", severity=Severity.S1, source="judge", segment_ids=[seg.id])
            )
            summary = JudgeSummary(status="ok", engine="fake", rejected_candidates=[self.drop])
            out.append((kept, summary))
        return out


def test_harness_merges_what_the_judge_returns(devset: list[LabelledCall], engine: RuleEngine) -> None:
    judge: Reviewer = FakeJudge(drop="R01", add="R08", add_turn=5)
    rules = evaluate(devset, engine)
    ticks: list[tuple[int, int]] = []
    judged = evaluate(
        devset, engine, judge, judge_name="fake:test", judge_batch=10, progress=lambda d, t: ticks.append((d, t))
    )
    assert judge.seen == len(devset)  # type: ignore[attr-defined]
    assert ticks[0] == (10, len(devset)) and ticks[-1] == (len(devset), len(devset))
    assert len(ticks) == -(-len(devset) // 10)  # batches of 10 calls
    r01 = {s.rule_id: s for s in judged.per_id}["R01"]
    assert r01.findings == 0 and r01.fn == {s.rule_id: s for s in rules.per_id}["R01"].labels
    r08_rules = {s.rule_id: s for s in rules.per_id}["R08"]
    r08 = {s.rule_id: s for s in judged.per_id}["R08"]
    assert r08_rules.tp == 0 and r08.tp >= 2 and r08.fp > 0  # v29 and v30 label R08 on turn 5
    assert judged.judge == "fake:test" and all(o.judge_status == "ok" for o in judged.outcomes)
    assert judged.fp_rate_compliant is not None and judged.fp_rate_compliant > rules.fp_rate_compliant  # type: ignore[operator]


def test_rules_alone_on_the_dev_set(devset: list[LabelledCall], engine: RuleEngine) -> None:
    result = evaluate(devset, engine)
    by_id = {s.rule_id: s for s in result.per_id}
    assert result.calls == len(devset) and result.labels == sum(coverage(devset).values())
    for rule_id in ("F03", "F05", "F15", "F16", "R05", "R09", "C01", "C08"):  # keyword / metadata checks
        assert by_id[rule_id].recall == 1.0, rule_id
    for rule_id in ("R06", "R07", "R08"):  # judge-only checks: the pack has no rule for them
        assert by_id[rule_id].findings == 0
    assert result.overall.precision is not None and result.overall.precision > 0.8


def test_cli_eval_without_judge_prints_per_id_figures(tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    result = runner.invoke(app, ["eval", "--judge", "none", "--json", str(out)])
    assert result.exit_code == 0, result.output
    for text in ("F01", "R09", "C08", "overall", "precision", "recall", "false-positive rate on compliant calls"):
        assert text in result.output
    saved = json.loads(out.read_text(encoding="utf-8"))
    assert saved["calls"] >= 40 and saved["judge"] == "none" and len(saved["per_id"]) == 35


def test_cli_eval_every_nth_call_is_a_deterministic_subset(tmp_path: Path) -> None:
    full, half = tmp_path / "full.json", tmp_path / "half.json"
    assert runner.invoke(app, ["eval", "--json", str(full)]).exit_code == 0
    result = runner.invoke(app, ["eval", "--every", "2", "--json", str(half)])
    assert result.exit_code == 0, result.output
    calls, subset = json.loads(full.read_text())["calls"], json.loads(half.read_text())
    assert subset["calls"] == (calls + 1) // 2 and subset["data"].endswith("(1 call in 2)")
    assert runner.invoke(app, ["eval", "--every", "0"]).exit_code == 2


def test_cli_eval_rejects_bad_options_and_bad_data(tmp_path: Path) -> None:
    assert runner.invoke(app, ["eval", "--judge", "gpt"]).exit_code == 2
    assert runner.invoke(app, ["eval", "--model", "qwen-7b"]).exit_code == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(_record(labels=[{"rule_id": "F03", "turn": 9}])) + "\n", encoding="utf-8")
    result = runner.invoke(app, ["eval", "--data", str(bad)])
    assert result.exit_code == 2
    assert "turn 9 is out of range" in result.output
