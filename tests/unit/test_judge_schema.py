"""LLM judge without a model: schema, citation checks, chunking, merge, retry-once-then-review.

``FakeJudgeEngine`` is a fake: it returns canned answers (or runs a function over the prompts) so the
judge's own logic is tested in milliseconds; the real models are in tests/integration/test_judge_engines.py.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence

import pytest

from callqc.dispatcher import processing_error
from callqc.judge import JudgeSettings
from callqc.judge.engines import ChatRequest, Completion, EngineStats, JudgeEngineError, JudgeEngineTimeout
from callqc.judge.judge import Judge
from callqc.judge.prompts import chunk_transcript, prompt_version, render_segment, system_prompt
from callqc.judge.schema import InvalidJudgeOutput, output_schema, parse_answer
from callqc.models import CallMetadata, Finding, Ledger, Role, Segment, Transcript

from ..judge_calls import PACK, pack_candidate, timed_segments

Answer = str | Callable[[ChatRequest], str]


class FakeJudgeEngine:
    """A fake engine (no model): answers from a script, one list entry per ``complete_many`` call."""

    name = "fake"
    model_version = "fake@000000000000"

    def __init__(self, script: list[list[Answer] | Exception]) -> None:
        self.script = list(script)
        self.calls: list[list[ChatRequest]] = []
        self.stats = EngineStats()

    @property
    def healthy(self) -> bool:
        return True

    def complete_many(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        self.calls.append(list(requests))
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        answers = step if len(step) == len(requests) else [step[0]] * len(requests)
        out = []
        for request, answer in zip(requests, answers, strict=True):
            text = answer(request) if callable(answer) else answer
            out.append(Completion(text, prompt_tokens=100, completion_tokens=20, finish_reason="stop"))
        return out

    def close(self) -> None:
        pass


def seg(i: int, role: Role, text: str, start: float) -> Segment:
    return Segment(id=f"s{i:04d}", role=role, start=start, end=start + 2.0, text=text)


def threat_call() -> tuple[Transcript, CallMetadata, list[Finding]]:
    segments = timed_segments(
        [
            (Role.AGENT, "您好，我是某某消费金融贷后专员，工号1234。"),
            (Role.AGENT, "请问是张三先生本人吗？"),
            (Role.CUSTOMER, "是我。"),
            (Role.AGENT, "你再不还钱，我让你全村都知道，让你身败名裂。"),
            (Role.CUSTOMER, "我现在真的没钱，我不想活了。"),
            (Role.AGENT, "我们不会上门，请通过官方App还款。"),
        ],
        seconds=2.0,
    )
    transcript = Transcript(language="zh", duration=12.0, segments=segments)
    candidate = pack_candidate("F02", segments[3], evidence="全村都知道", confidence=0.7)
    f03 = pack_candidate("F03", segments[3], confidence=0.9)
    metadata = CallMetadata(ledger=Ledger(amount_due=30000, overdue_days=30))
    return transcript, metadata, [candidate, f03]


def answer(candidates: dict | None = None, findings: list | None = None, emotions: list | None = None) -> str:
    return json.dumps(
        {"candidates": candidates or {}, "findings": findings or [], "emotions": emotions or []}, ensure_ascii=False
    )


CONFIRM = answer(
    {
        "k1": {
            "segment_ids": ["s0004"],
            "rationale": "以让全村知道相威胁，属软暴力",
            "verdict": "violation",
            "confidence": 0.92,
        }
    },
    [{"rule_id": "C01", "segment_ids": ["s0005"], "rationale": "客户表示不想活了", "confidence": 0.9}],
    [
        {"role": "agent", "segment_ids": ["s0004"], "state": "angry", "hostile": True},
        {"role": "customer", "segment_ids": ["s0005"], "state": "distressed", "hostile": True},
    ],
)


def judge_with(script: list[list[Answer] | Exception], **settings: object) -> tuple[Judge, FakeJudgeEngine]:
    engine = FakeJudgeEngine(script)
    return Judge(engine, PACK, JudgeSettings(**settings)), engine


# ---- schema and citations ----------------------------------------------------------------------------


def test_schema_enumerates_candidates_segments_and_rules() -> None:
    schema = output_schema(["k1", "k2"], ["s0001", "s0002"], ["F02", "C01"])
    cands = schema["properties"]["candidates"]
    assert cands["required"] == ["k1", "k2"] and cands["additionalProperties"] is False
    verdict = cands["properties"]["k1"]["properties"]
    assert verdict["verdict"]["enum"] == ["violation", "not_violation", "uncertain"]
    assert verdict["segment_ids"]["items"]["enum"] == ["s0001", "s0002"]
    assert schema["properties"]["findings"]["items"]["properties"]["rule_id"]["enum"] == ["F02", "C01"]
    emotion = schema["properties"]["emotions"]["items"]["properties"]
    assert emotion["state"]["enum"] == ["calm", "anxious", "angry", "distressed"]


def test_valid_answer_parses_and_confidence_is_clamped() -> None:
    text = answer({"k1": {"segment_ids": ["s0004"], "rationale": "威胁", "verdict": "violation", "confidence": 1.7}})
    parsed = parse_answer(text, ["k1"], ["s0004"], ["F02"])
    assert parsed.candidates["k1"].confidence == 1.0


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("这不是JSON", "not JSON"),
        (answer({}), "no verdict for candidate"),
        (answer({"k1": {"segment_ids": [], "rationale": "", "verdict": "maybe", "confidence": 0.5}}), "schema"),
        (
            answer({"k1": {"segment_ids": ["s9999"], "rationale": "", "verdict": "violation", "confidence": 1}}),
            "not in the transcript",
        ),
        (
            answer(
                {"k1": {"segment_ids": [], "rationale": "", "verdict": "uncertain", "confidence": 0.5}},
                [{"rule_id": "F02", "segment_ids": ["s0042"], "rationale": "", "confidence": 0.5}],
            ),
            "not in the transcript",
        ),
        (
            answer(
                {"k1": {"segment_ids": [], "rationale": "", "verdict": "uncertain", "confidence": 0.5}},
                [{"rule_id": "F03", "segment_ids": ["s0004"], "rationale": "", "confidence": 0.5}],
            ),
            "not one the judge may raise",
        ),
        (
            answer(
                {"k1": {"segment_ids": [], "rationale": "", "verdict": "uncertain", "confidence": 0.5}},
                emotions=[{"role": "agent", "segment_ids": [], "state": "calm", "hostile": False}],
            ),
            "cites no segment",
        ),
    ],
)
def test_invalid_answers_are_rejected(text: str, reason: str) -> None:
    with pytest.raises(InvalidJudgeOutput, match=reason):
        parse_answer(text, ["k1"], ["s0004", "s0005"], ["F02"])


def test_code_fences_are_tolerated() -> None:
    parsed = parse_answer("```json\n" + answer() + "\n```", [], ["s0001"], [])
    assert parsed.findings == []


# ---- prompts and chunking --------------------------------------------------------------------------------


def test_system_prompt_comes_from_the_pack_and_versions_with_it() -> None:
    prompt = system_prompt(PACK)
    assert "资深贷后质检员" in prompt
    assert f"{PACK.rule('F02').name}（S0）" in prompt and PACK.version in prompt
    changed = PACK.model_copy(update={"version": "2099.1.1"})
    assert prompt_version(PACK).startswith(f"judge-v1/{PACK.version}@")
    assert prompt_version(changed) != prompt_version(PACK)


def test_segments_render_with_id_time_and_role() -> None:
    line = render_segment(seg(4, Role.AGENT, "让你 身败名裂", 65.0))
    assert line == "[s0004 01:05-01:07 坐席] 让你 身败名裂"


def test_long_calls_are_chunked_with_overlap() -> None:
    segments = [seg(i, Role.AGENT if i % 2 else Role.CUSTOMER, "字" * 40, i * 2.0) for i in range(1, 31)]
    transcript = Transcript(language="zh", duration=62, segments=segments)
    chunks = chunk_transcript(transcript, chunk_chars=400, overlap_segments=2)
    assert len(chunks) > 1
    covered = [s for c in chunks for s in c.segment_ids]
    assert set(covered) == {s.id for s in segments}
    for before, after in itertools.pairwise(chunks):
        assert before.segment_ids[-2:] == after.segment_ids[:2]
        assert sum(len(render_segment(s)) + 1 for s in before.segments) <= 400
    single = chunk_transcript(transcript, chunk_chars=100_000, overlap_segments=2)
    assert len(single) == 1


def test_one_huge_segment_still_makes_progress() -> None:
    transcript = Transcript(language="zh", duration=5, segments=[seg(1, Role.AGENT, "长" * 5000, 0.0)])
    assert [c.segment_ids for c in chunk_transcript(transcript, 200, 2)] == [["s0001"]]


# ---- merge --------------------------------------------------------------------------------------------------


def test_confirmed_candidate_becomes_both_and_judge_findings_are_added() -> None:
    transcript, metadata, findings = threat_call()
    judge, engine = judge_with([[CONFIRM]])
    ((merged, summary),) = judge.review_many([(transcript, metadata, findings)])
    assert summary.status == "ok" and summary.engine == "fake" and summary.prompt_version == judge.prompt_version
    assert summary.chunks == 1 and summary.prompt_tokens == 100 and summary.completion_tokens == 20
    f02 = next(f for f in merged if f.rule_id == "F02")
    assert f02.source == "both" and f02.confidence == 0.92 and f02.rationale.startswith("以让全村")
    assert (f02.start, f02.end) == (6.0, 8.0)
    f03 = next(f for f in merged if f.rule_id == "F03")
    assert f03.source == "rule"  # K rules pass through untouched
    c01 = next(f for f in merged if f.rule_id == "C01")
    assert c01.source == "judge" and c01.category == "customer_signal" and c01.segment_ids == ["s0005"]
    assert (c01.start, c01.end) == (8.0, 10.0) and "不想活了" in c01.evidence
    agent, customer = summary.emotions
    assert agent.role == Role.AGENT and agent.hostile and agent.state == "angry"
    assert customer.state == "distressed" and not customer.hostile  # hostile is an agent-only flag
    prompt = engine.calls[0][0].messages[1]["content"]
    assert "k1 F02" in prompt and "[s0004 00:06-00:08 坐席]" in prompt and "台账应还金额：30000" in prompt


def test_rejected_candidate_is_dropped_and_listed() -> None:
    transcript, metadata, findings = threat_call()
    reject = answer(
        {"k1": {"segment_ids": ["s0004"], "rationale": "引用", "verdict": "not_violation", "confidence": 0.8}}
    )
    judge, _ = judge_with([[reject]])
    ((merged, summary),) = judge.review_many([(transcript, metadata, findings)])
    assert [f.rule_id for f in merged] == ["F03"]
    assert summary.rejected_candidates == ["F02"]


def test_a_rejected_high_confidence_rule_hit_is_kept_for_a_reviewer() -> None:
    """F01 (a keyword hit of a K+L check, rule confidence 0.9) rejected by the judge: kept at lowered confidence;
    F02 (an L-only candidate, 0.7) rejected: dropped."""
    transcript, metadata, findings = threat_call()
    findings = [*findings, pack_candidate("F01", transcript.segments[3], evidence="全村都知道")]
    reject_both = answer(
        {
            "k1": {"segment_ids": ["s0004"], "rationale": "引用", "verdict": "not_violation", "confidence": 0.8},
            "k2": {"segment_ids": ["s0004"], "rationale": "玩笑", "verdict": "not_violation", "confidence": 0.8},
        }
    )
    judge, _ = judge_with([[reject_both]], uncertain_factor=0.5)
    ((merged, summary),) = judge.review_many([(transcript, metadata, findings)])
    assert [(f.rule_id, f.confidence) for f in merged] == [("F03", 0.9), ("F01", 0.45)]  # F03: K only, not reviewed
    assert merged[1].source == "rule" and "需人工复核" in merged[1].rationale
    assert sorted(summary.rejected_candidates) == ["F01", "F02"]
    judge, _ = judge_with([[reject_both]], protected_confidence=None)
    ((merged, _summary),) = judge.review_many([(transcript, metadata, findings)])
    assert [f.rule_id for f in merged] == ["F03"]


def test_uncertain_candidate_is_kept_with_lower_confidence() -> None:
    transcript, metadata, findings = threat_call()
    unsure = answer({"k1": {"segment_ids": [], "rationale": "语境不清", "verdict": "uncertain", "confidence": 0.5}})
    judge, _ = judge_with([[unsure]], uncertain_factor=0.5)
    ((merged, _summary),) = judge.review_many([(transcript, metadata, findings)])
    f02 = next(f for f in merged if f.rule_id == "F02")
    assert f02.source == "rule" and f02.confidence == pytest.approx(0.35) and "语境不清" in f02.rationale


def test_judge_finding_on_a_rule_hit_corroborates_instead_of_duplicating() -> None:
    transcript, metadata, findings = threat_call()
    text = answer(
        {"k1": {"segment_ids": ["s0004"], "rationale": "", "verdict": "uncertain", "confidence": 0.4}},
        [{"rule_id": "F02", "segment_ids": ["s0004"], "rationale": "软暴力", "confidence": 0.9}],
    )
    judge, _ = judge_with([[text]])
    ((merged, _summary),) = judge.review_many([(transcript, metadata, findings)])
    assert [f.rule_id for f in merged].count("F02") == 1
    assert next(f for f in merged if f.rule_id == "F02").source == "both"


# ---- retry once, then human review; engine failures are retryable -----------------------------------------


def test_fabricated_citation_is_retried_once_with_the_reason() -> None:
    transcript, metadata, findings = threat_call()
    bad = answer({"k1": {"segment_ids": ["s0099"], "rationale": "", "verdict": "violation", "confidence": 0.9}})
    judge, engine = judge_with([[bad], [CONFIRM]])
    ((merged, summary),) = judge.review_many([(transcript, metadata, findings)])
    assert summary.status == "ok" and len(engine.calls) == 2
    assert "s0099" in engine.calls[1][0].messages[-1]["content"]  # the retry says what was wrong
    assert next(f for f in merged if f.rule_id == "F02").source == "both"
    assert summary.prompt_tokens == 200  # both attempts counted


def test_invalid_twice_marks_the_call_for_review_and_keeps_rule_findings() -> None:
    transcript, metadata, findings = threat_call()
    bad = answer({"k1": {"segment_ids": ["s0099"], "rationale": "", "verdict": "violation", "confidence": 0.9}})
    judge, engine = judge_with([["{not json"], [bad]])
    ((merged, summary),) = judge.review_many([(transcript, metadata, findings)])
    assert summary.status == "needs_review" and "s0099" in summary.error
    assert merged == findings  # nothing passed silently, nothing dropped
    assert len(engine.calls) == 2


def test_batch_retries_only_the_invalid_calls() -> None:
    calls = [threat_call(), threat_call()]
    judge, engine = judge_with([["{oops", CONFIRM], [CONFIRM]])
    results = judge.review_many(calls)
    assert [s.status for _f, s in results] == ["ok", "ok"]
    assert [len(c) for c in engine.calls] == [2, 1]


@pytest.mark.parametrize("error", [JudgeEngineTimeout("ran past 600 s"), JudgeEngineError("closed"), OSError("boom")])
def test_engine_failure_is_a_retryable_error_never_a_pass(error: Exception) -> None:
    transcript, metadata, findings = threat_call()
    judge, _ = judge_with([error])
    with pytest.raises(JudgeEngineError) as raised:
        judge.review_many([(transcript, metadata, findings)])
    assert processing_error(raised.value) is None  # the dispatcher retries it (then FAILED), never DONE


def test_refused_request_counts_as_invalid() -> None:
    transcript, metadata, findings = threat_call()

    class Refusing(FakeJudgeEngine):
        def complete_many(self, requests: Sequence[ChatRequest]) -> list[Completion]:
            self.calls.append(list(requests))
            return [Completion("", error="engine refused the request: context too long") for _ in requests]

    engine = Refusing([])
    ((_merged, summary),) = Judge(engine, PACK).review_many([(transcript, metadata, findings)])
    assert summary.status == "needs_review" and "context too long" in summary.error and len(engine.calls) == 2


def test_no_engine_means_skipped() -> None:
    transcript, metadata, findings = threat_call()
    ((merged, summary),) = Judge(None, PACK).review_many([(transcript, metadata, findings)])
    assert summary.status == "skipped" and merged == findings


def test_chunked_call_sends_each_candidate_where_its_segment_is() -> None:
    transcript, metadata, findings = threat_call()
    seen: list[list[str]] = []

    def reply(request: ChatRequest) -> str:
        schema = request.schema or {}
        keys = schema["properties"]["candidates"]["required"]
        segs = schema["properties"]["emotions"]["items"]["properties"]["segment_ids"]["items"]["enum"]
        seen.append(keys)
        verdict = {"segment_ids": ["s0004"], "rationale": "威胁", "verdict": "violation", "confidence": 0.9}
        return answer(
            {k: verdict for k in keys},
            emotions=[{"role": "agent", "segment_ids": segs[:1], "state": "calm", "hostile": False}],
        )

    judge, engine = judge_with([[reply]], chunk_chars=200, chunk_overlap_segments=1)
    ((merged, summary),) = judge.review_many([(transcript, metadata, findings)])
    assert summary.chunks == len(engine.calls[0]) > 1
    assert sum(1 for keys in seen if keys == ["k1"]) >= 1 and all(keys in ([], ["k1"]) for keys in seen)
    assert next(f for f in merged if f.rule_id == "F02").source == "both"
    assert len(summary.emotions) == summary.chunks


# ---- model files ------------------------------------------------------------------------------------------


def test_gguf_is_assembled_once_checked_and_rebuilt_when_damaged(tmp_path, monkeypatch) -> None:
    import hashlib

    from callqc.asr_models import ModelIntegrityError
    from callqc.judge import models

    data = {"pkg_a": b"GGUF" + b"a" * 100, "pkg_b": b"b" * 50}
    for package, blob in data.items():
        (tmp_path / package / "data").mkdir(parents=True)
        (tmp_path / package / "data" / "part.bin").write_bytes(blob)
    monkeypatch.setattr(models, "_package_data_dir", lambda package: tmp_path / package / "data")
    whole = data["pkg_a"] + data["pkg_b"]
    bundle = models.BundledGguf(
        "tiny", (("pkg_a", "part.bin"), ("pkg_b", "part.bin")), len(whole), hashlib.sha256(whole).hexdigest()
    )
    cache = tmp_path / "cache"
    gguf = models.assemble_gguf(bundle, cache)
    assert gguf.read_bytes() == whole and gguf == cache / "tiny" / "model.gguf"
    gguf.write_bytes(b"x" * len(whole))  # same size, wrong bytes
    assert models.assemble_gguf(bundle, cache).read_bytes() == whole
    bad = models.BundledGguf("bad", bundle.parts, bundle.size, "0" * 64)
    with pytest.raises(ModelIntegrityError):
        models.assemble_gguf(bad, cache)
    local = models.resolve_model(JudgeSettings(model=str(gguf), model_cache=cache))
    assert local.gguf == gguf and local.version.startswith("model@")
    with pytest.raises(ModelIntegrityError):
        models.resolve_model(JudgeSettings(model="no-such-model", model_cache=cache))


def test_bundled_models_are_the_documented_sizes() -> None:
    from callqc.judge.models import BUNDLED

    assert BUNDLED["qwen2.5-coder-1.5b"].size == 1_117_320_768 and len(BUNDLED["qwen2.5-coder-1.5b"].parts) == 22
    assert BUNDLED["qwen2.5-coder-0.5b"].size == 491_400_064 and len(BUNDLED["qwen2.5-coder-0.5b"].parts) == 6


def test_answer_cut_short_is_retried_with_more_room() -> None:
    transcript, metadata, findings = threat_call()

    class CutShort(FakeJudgeEngine):
        def complete_many(self, requests: Sequence[ChatRequest]) -> list[Completion]:
            self.calls.append(list(requests))
            if len(self.calls) == 1:
                return [Completion('{"candidates": {"k1": {"segm', 1500, 300, "length") for _ in requests]
            return [Completion(CONFIRM, 1500, 400, "stop") for _ in requests]

    engine = CutShort([])
    ((_merged, summary),) = Judge(engine, PACK, JudgeSettings(max_tokens=300)).review_many(
        [(transcript, metadata, findings)]
    )
    assert summary.status == "ok"
    assert engine.calls[1][0].max_tokens == 600
