"""Batched scanning: one scan for many calls gives exactly the per-call findings, on both back-ends."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

from callqc.models import CallMetadata, Ledger, Transcript
from callqc.rules import RuleEngine, default_pack_path, load_rule_pack, transcript_from_turns
from callqc.rules.batch import PatternFlags
from callqc.rules.layers import Layer, NarrowAlphabet
from tests.unit.rule_backends import BACKENDS, HYPERSCAN_BACKENDS, NATIVE, needs_hyperscan, needs_native


@cache
def engine(backend: str) -> RuleEngine:
    return RuleEngine(load_rule_pack(default_pack_path()), backend=backend)


CALLS = [
    [("agent", "您好，我是安信消费金融的贷后专员，工号1234，本次通话将被录音。"), ("customer", "嗯")],
    [("agent", "您欠款三万五千元，逾期三十天"), ("customer", "我不想活了"), ("agent", "你这个老赖，再见")],
    [],  # no segments at all
    [("customer", "我要打12378投诉你们"), ("customer", "这笔我没借")],  # no agent side
    [("agent", "You are a deadbeat. Goodbye."), ("customer", "I lost my job")],
    [("speaker_0", "你直接转我个人微信就行"), ("agent", "\x1e老赖"), ("agent", "")],
]
META = CallMetadata(attempts_today=9, ledger=Ledger(amount_due=30000, overdue_days=3))


@pytest.mark.parametrize("backend", BACKENDS)
def test_evaluate_many_equals_evaluate_one_by_one(backend: str) -> None:
    transcripts = [
        transcript_from_turns(turns) if turns else Transcript(language="zh", duration=0) for turns in CALLS
    ] * 3
    metas = [META, None] * (len(transcripts) // 2)
    many = engine(backend).evaluate_many(transcripts, metas)
    assert many == [engine(backend).evaluate(t, m) for t, m in zip(transcripts, metas, strict=True)]
    assert any(f.rule_id == "F03" for f in many[1])
    assert all(f.segment_ids == [] for f in many[2])  # no text: metadata findings only


@pytest.mark.parametrize("backend", HYPERSCAN_BACKENDS)
def test_back_ends_agree_on_a_batch(backend: str) -> None:
    transcripts = [transcript_from_turns(turns) for turns in CALLS if turns]
    hs = engine(backend).evaluate_many(transcripts, [META] * len(transcripts))
    ac = engine("aho-corasick").evaluate_many(transcripts, [META] * len(transcripts))
    assert [[f.model_dump() for f in call] for call in hs] == [[f.model_dump() for f in call] for call in ac]


@pytest.mark.parametrize("backend", BACKENDS)
def test_first_use_patterns_are_found_in_every_call_of_a_batch(backend: str) -> None:
    """SINGLEMATCH is per call: the recording notice said in every call satisfies R05 in every call."""
    said = transcript_from_turns([("agent", "您好，本次通话将被录音", 0.0, 5.0)])
    silent = transcript_from_turns([("agent", "喂你好", 0.0, 5.0)])
    results = engine(backend).evaluate_many([said, silent, said, said, silent])
    r05 = [any(f.rule_id == "R05" for f in findings) for findings in results]
    assert r05 == [False, True, False, False, True]


def test_metadata_count_must_match() -> None:
    with pytest.raises(ValueError, match="metadata"):
        engine("aho-corasick").evaluate_many([Transcript(language="zh", duration=0)], [None, None])


NARROW_PACK = """
version: "0.1.0"
rules:
  - id: N01
    name: 间隔
    type: keyword
    severity: S1
    category: prohibited
    scope: any
    negation: false
    phrases: [sb, 滚蛋]
    regexes: ['欠.{0,3}钱', '[一-龥]{2}骗子', '(call|phone) ?me', 'a.{0,2}b']
"""


@needs_hyperscan
@needs_native
def test_narrow_regexes_agree_with_python_re() -> None:
    pack = load_rule_pack(NARROW_PACK)
    hs, ac = RuleEngine(pack, "hyperscan"), RuleEngine(pack, "aho-corasick")
    native = RuleEngine(pack, NATIVE)
    narrow = hs._matcher._narrow  # type: ignore[attr-defined]
    assert sorted(narrow.exprs) == sorted(
        i.pattern.id for i in hs._compiled.infos if i.label in ("欠.{0,3}钱", "a.{0,2}b")
    )
    texts = ["你欠我们的钱", "欠了很多很多钱", "usb 接口", "sb 一个", "大骗子们", "call me", "axxb ab", "滚蛋", "a\nb"]
    calls = [transcript_from_turns([("agent", t), ("customer", t)]) for t in texts]
    assert hs.evaluate_many(calls) == ac.evaluate_many(calls) == native.evaluate_many(calls)
    found = {f.evidence for call in hs.evaluate_many(calls) for f in call}
    assert {"欠我们的钱", "sb", "call me", "axxb ab", "滚蛋"} <= found  # two hits in one turn: one finding
    assert "欠了很多很多钱" not in found and "usb" not in found


def test_narrow_alphabet_keeps_at_most_128_characters() -> None:
    chars = [chr(0x4E00 + i) for i in range(200)]
    regexes = {i: f"{chars[2 * i]}.{{0,3}}{chars[2 * i + 1]}" for i in range(100)}
    narrow = NarrowAlphabet(regexes)
    assert len(narrow.exprs) == 64
    data = narrow.encode("一x丁\n" + chars[150])
    assert data[:4] == bytes([0x80, ord("x"), 0x81, 10]) and data[4] == 0x1A


def test_layer_byte_offsets_to_characters() -> None:
    text = "aé一😀b\n二"
    layer = Layer(text)
    byte_ends = [len(text[:i].encode()) for i in range(len(text) + 1)]
    assert layer.chars(np.array(byte_ends)).tolist() == list(range(len(text) + 1))
    assert layer.separators.tolist() == [text.encode().index(b"\n")]
    ascii_layer = Layer("abc\nd")
    assert ascii_layer.chars(np.array([0, 3, 5])).tolist() == [0, 3, 5]


def test_hits_expand_to_every_rule_they_feed() -> None:
    eng = engine("aho-corasick")
    call = eng.prepare(transcript_from_turns([("agent", "您欠款三万五千元，逾期三十天")]))
    recall = eng.recall([call])
    rows, rules = recall.per_rule(eng.flags)
    flags = PatternFlags.build(eng._compiled.infos)
    expected = [(r, t.rule) for r, pid in enumerate(recall.pattern.tolist()) for t in eng._compiled.infos[pid].targets]
    assert list(zip(rows.tolist(), rules.tolist(), strict=True)) == expected
    assert len(flags.target_rule) == sum(len(i.targets) for i in eng._compiled.infos)


@needs_hyperscan
def test_matchers_report_the_same_rows() -> None:
    """Raw rows (pattern, layer, start, end, end byte): equal for every pattern scanned over a whole layer;
    a first-use pattern's Hyperscan rows are among its Aho-Corasick rows."""
    from callqc.rules.batch import BatchText

    hs, ac = engine("hyperscan"), engine("aho-corasick")
    calls = [hs.prepare(transcript_from_turns(turns)) for turns in CALLS if turns] * 2
    batch = BatchText(calls, phonetic=True)
    end_only = {i.pattern.id for i in hs._compiled.infos if not i.pattern.needs_start}

    def rows(eng: RuleEngine) -> set[tuple[int, ...]]:  # an end-only pattern's start is end - 1 once validated
        found = eng._matcher.scan(batch.plain, batch.phon, batch.agent).tolist()
        return {(p, layer, e - 1 if p in end_only else s, e, b) for p, layer, s, e, b in found}

    hs_rows, ac_rows = rows(hs), rows(ac)
    first = {i.pattern.id for i in hs._compiled.infos if i.pattern.first_only}
    assert {r for r in hs_rows if r[0] not in first} == {r for r in ac_rows if r[0] not in first}
    assert {(r[0], r[2], r[3]) for r in hs_rows if r[0] in first} <= {(r[0], r[2], r[3]) for r in ac_rows}
    assert any(r[1] == 1 for r in hs_rows)  # phonetic-layer rows are labelled as such
