"""Engine behaviour: evidence and audio spans, segment scoping, confidences, both matchers agreeing."""

from __future__ import annotations

from functools import cache

import pytest

from callqc.models import CallMetadata, Ledger, Role, Segment, Transcript, Word
from callqc.rules import RuleEngine, default_pack_path, load_rule_pack, transcript_from_turns
from tests.unit.rule_backends import BACKENDS, HYPERSCAN_BACKENDS


@cache
def engine(backend: str = "auto") -> RuleEngine:
    return RuleEngine(load_rule_pack(default_pack_path()), backend=backend)


def _by_rule(findings: list, rule_id: str) -> list:
    return [f for f in findings if f.rule_id == rule_id]


@pytest.mark.parametrize("backend", BACKENDS)
def test_evidence_is_original_text_and_span_is_narrowed_to_words(backend: str) -> None:
    words = [
        Word(text="再不還錢", start=10.0, end=11.0),
        Word(text="，", start=11.0, end=11.0),
        Word(text="我找人", start=11.2, end=11.8),
        Word(text="打斷", start=12.0, end=12.4),
        Word(text="你的腿", start=12.4, end=13.0),
        Word(text="。", start=13.0, end=13.0),
    ]
    seg = Segment(id="s7", role=Role.AGENT, start=10.0, end=14.0, text="再不還錢，我找人打斷你的腿。", words=words)
    transcript = Transcript(language="zh", duration=20.0, segments=[seg])
    [f01] = _by_rule(engine(backend).evaluate(transcript), "F01")
    assert f01.evidence in ("找人打斷你的腿", "打斷你的腿")
    assert f01.segment_ids == ["s7"]
    assert (f01.start, f01.end) in ((11.2, 13.0), (12.0, 13.0))
    assert f01.source == "rule" and f01.category == "prohibited" and f01.severity == "S0"


@pytest.mark.parametrize("backend", BACKENDS)
def test_many_hits_of_a_rule_in_one_turn_are_one_finding_spanning_them(backend: str) -> None:
    transcript = transcript_from_turns(
        [
            ("agent", "再不还钱我找人打断你的腿，还要打断你的腿，弄死你。", 0.0, 12.0),
            ("customer", "你说什么？", 12.0, 13.0),
            ("agent", "我找人打断你的腿。", 13.0, 16.0),
        ]
    )
    f01 = _by_rule(engine(backend).evaluate(transcript), "F01")
    assert [f.segment_ids for f in f01] == [["call-0"], ["call-2"]]  # one per turn, not one per match
    first = f01[0]
    assert first.evidence.startswith("打断你的腿") and first.evidence.endswith("弄死你")
    assert "times in this turn" in first.rationale
    assert 0.0 <= first.start < first.end <= 12.0  # no word timings here: the span is the turn


def test_span_falls_back_to_the_segment_without_words() -> None:
    transcript = transcript_from_turns([("agent", "你就是个老赖", 3.0, 5.5)])
    [f03] = _by_rule(engine().evaluate(transcript), "F03")
    assert (f03.start, f03.end) == (3.0, 5.5)


def test_a_phrase_never_spans_two_segments() -> None:
    transcript = transcript_from_turns([("agent", "今晚我找人收拾"), ("agent", "你好")])
    assert _by_rule(engine().evaluate(transcript), "F01") == []


def test_metadata_findings_have_no_segment_but_a_spoken_amount_does() -> None:
    meta = CallMetadata.model_validate(
        {
            "call_started_at": "2026-11-02T23:00:00+08:00",
            "attempts_today": 9,
            "ledger": {"amount_due": 30000, "overdue_days": 3},
        }
    )
    transcript = transcript_from_turns([("agent", "请问是张三本人吗"), ("agent", "您欠款三万五千元")])
    findings = engine().evaluate(transcript, meta)
    for rule_id in ("F15", "F16"):
        [f] = _by_rule(findings, rule_id)
        assert f.segment_ids == [] and f.evidence == ""
    [f06] = _by_rule(findings, "F06")
    assert f06.segment_ids == ["call-1"] and f06.evidence == "欠款三万五千元"
    assert "35000" in f06.rationale and "30000" in f06.rationale


def test_missing_required_phrase_points_at_its_window() -> None:
    turns = [("agent", "喂你好", 0.0, 5.0), ("customer", "嗯", 5.0, 8.0), ("agent", "就这样吧", 8.0, 100.0)]
    findings = engine().evaluate(transcript_from_turns(turns))
    [r05] = _by_rule(findings, "R05")
    assert (r05.start, r05.end) == (0.0, 60.0)
    assert r05.segment_ids == ["call-0", "call-2"] and r05.evidence == ""
    assert "first 60s" in r05.rationale
    [r09] = _by_rule(findings, "R09")
    assert (r09.start, r09.end) == (70.0, 100.0) and r09.segment_ids == ["call-2"]
    [r01] = _by_rule(findings, "R01")
    assert "机构" in r01.rationale and "姓名或工号" in r01.rationale


def test_empty_call_has_no_required_findings_but_metadata_rules_apply() -> None:
    findings = engine().evaluate(Transcript(language="zh", duration=0.0), CallMetadata(attempts_today=8))
    assert [f.rule_id for f in findings] == ["F16"]


def test_homophone_match_is_less_confident_than_exact() -> None:
    exact = _by_rule(engine().evaluate(transcript_from_turns([("agent", "您已逾期三十天")])), "R02")
    homophone = _by_rule(engine().evaluate(transcript_from_turns([("agent", "您已于七三十天")])), "R02")
    assert exact and homophone
    assert homophone[0].confidence < exact[0].confidence
    assert "homophone" in homophone[0].rationale or "逾期" in homophone[0].rationale


def test_unknown_speaker_is_checked_with_lower_confidence() -> None:
    agent = _by_rule(engine().evaluate(transcript_from_turns([("agent", "你就是个老赖")])), "F03")
    mono = _by_rule(engine().evaluate(transcript_from_turns([("speaker_0", "你就是个老赖")])), "F03")
    assert agent and mono and mono[0].confidence < agent[0].confidence


def test_agent_first_use_is_found_even_after_the_customer_used_the_phrase() -> None:
    # R01 / R02 patterns stop at their first match: the agent side of the call is scanned first.
    turns = [
        ("customer", "你工号多少？是关于贷款的事吗？逾期了？", 0.0, 4.0),
        ("agent", "您好，我是某某消费金融贷后专员，工号1234，来电是关于您名下贷款。", 4.0, 12.0),
        ("agent", "请问是张三先生本人吗？", 12.0, 14.0),
        ("agent", "您已逾期三十天。", 14.0, 16.0),
    ]
    findings = engine().evaluate(transcript_from_turns(turns))
    assert _by_rule(findings, "R01") == []
    assert _by_rule(findings, "R02") == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_run_records_pack_version_and_backend(backend: str) -> None:
    run = engine(backend).run(transcript_from_turns([("agent", "你就是个老赖")]))
    assert run.pack_version == "2026.11.2" and run.backend == backend
    assert any(f.rule_id == "F03" for f in run.findings)


def test_findings_are_sorted_by_time() -> None:
    turns = [("agent", "感谢接听，再见"), ("customer", "我不想活了"), ("agent", "你就是个老赖")]
    findings = engine().evaluate(transcript_from_turns(turns))
    assert [f.start for f in findings] == sorted(f.start for f in findings)


_PARITY_CALLS = [
    [
        ("agent", "您好，我是某某消费金融的贷后专员，公号1234，本次通话将被录音，来电是关于您名下贷款。"),
        ("agent", "请问是张三先生本人吗？"),
        ("customer", "是我。你们这些骗子！"),
        ("agent", "您说我们是骗子，我理解您的情绪。您已于七三十天，欠款三万五千元。"),
        ("agent", "我们不会上门收拾你的。但是不还的话今晚上门收拾你。"),
        ("customer", "我不想活了，我要打12378投诉"),
        ("agent", "感谢接听，再见。"),
    ],
    [
        ("agent", "Hello, this is Amy calling from Acme Finance, this call is recorded."),
        ("customer", "Wrong number, I never borrowed anything."),
        ("agent", "You are a deadbeat, we will call everyone in your contacts."),
        ("agent", "You are overdue for 45 days, the amount due is 35000 yuan. Goodbye."),
    ],
    [
        ("speaker_0", "你直接转我个人微信就行，不然打到你单位去"),
        ("speaker_1", "我在录音"),
        ("agent", "你的照片我们会贴在小区门口，交五百的停催费就不催了"),
    ],
]


@pytest.mark.parametrize("backend", HYPERSCAN_BACKENDS)
def test_matchers_give_the_same_findings(backend: str) -> None:
    meta = CallMetadata(attempts_today=3, ledger=Ledger(amount_due=35000, overdue_days=30), outsourced=True)
    for turns in _PARITY_CALLS:
        transcript = transcript_from_turns(turns)
        hs = [f.model_dump() for f in engine(backend).evaluate(transcript, meta)]
        ac = [f.model_dump() for f in engine("aho-corasick").evaluate(transcript, meta)]
        assert hs == ac
        assert len(hs) >= 3


def test_auto_backend_falls_back_without_hyperscan(monkeypatch: pytest.MonkeyPatch) -> None:
    from callqc.rules import native

    monkeypatch.setattr(native, "native_available", lambda: False)
    if native.hyperscan_available():
        assert RuleEngine(load_rule_pack(default_pack_path())).backend == "hyperscan"
    monkeypatch.setattr(native, "hyperscan_available", lambda: False)
    fallback = RuleEngine(load_rule_pack(default_pack_path()))
    assert fallback.backend == "aho-corasick"
    assert _by_rule(fallback.evaluate(transcript_from_turns([("agent", "你就是个老赖")])), "F03")


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown matcher backend"):
        RuleEngine(load_rule_pack(default_pack_path()), backend="grep")


def test_one_engine_serves_many_threads() -> None:
    from concurrent.futures import ThreadPoolExecutor

    calls = [transcript_from_turns(turns) for turns in _PARITY_CALLS] * 8
    expected = [engine().evaluate(t) for t in calls]
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(engine().evaluate, calls)) == expected


def test_control_characters_in_text_do_not_break_segment_mapping() -> None:
    turns = [("agent", "你好\x1e\n我们"), ("agent", "你就是个\x1e老赖"), ("customer", "嗯")]
    [f03] = _by_rule(engine().evaluate(transcript_from_turns(turns)), "F03")
    assert f03.segment_ids == ["call-1"] and f03.evidence == "老赖"


_CUSTOM = """
version: "0.1.0"
rules:
  - id: P01
    name: 个人账户（邻近）
    type: keyword
    severity: S0
    category: prohibited
    phrases: [微信, 支付宝]
    near: {phrases: [转给我, 转我], within: 3}
  - id: T01
    name: 时段（上海）
    type: call_hours
    severity: S0
    category: prohibited
    banned: {from: "21:00", to: "08:00"}
    timezone: "+08:00"
"""


@pytest.mark.parametrize(
    ("text", "hit"),
    [("你微信转给我就行", True), ("转我支付宝", True), ("你用微信还是支付宝都可以的，请转给我们的官方账户", False)],
)
def test_proximity_condition(text: str, hit: bool) -> None:
    custom = RuleEngine(load_rule_pack(_CUSTOM))
    assert bool(_by_rule(custom.evaluate(transcript_from_turns([("agent", text)])), "P01")) is hit


@pytest.mark.parametrize(("utc", "hit"), [("12:59", False), ("13:00", True), ("23:59", True), ("00:00", False)])
def test_call_hours_converted_to_the_configured_time_zone(utc: str, hit: bool) -> None:
    custom = RuleEngine(load_rule_pack(_CUSTOM))
    meta = CallMetadata.model_validate({"call_started_at": f"2026-11-02T{utc}:00+00:00"})
    assert bool(_by_rule(custom.evaluate(Transcript(language="zh", duration=0), meta), "T01")) is hit
