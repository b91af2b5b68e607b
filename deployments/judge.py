"""Judge stage: the LLM judge over the rule engine's candidates (``callqc.judge``).

Calls arriving together are gathered (``@serve.batch``) and all their chunks go to the engine in one
``complete_many`` (vLLM: one generate call; llama.cpp: every slot busy). The prompts follow the rule
pack in force: like the Rules stage, the replica holds the pack (``rules.pack_path``) and, with
``rules.pack_key`` set, hot-reloads it from S3 (``PackWatcher``).

Per-environment settings come from ``judge`` in callqc's settings, overridden by ``user_config`` in the
Serve config (``{engine: vllm, device: cuda, max_num_seqs: 64}`` with ``num_gpus`` on a GPU node).
An engine failure or timeout makes ``review`` raise ``JudgeEngineError``: the dispatcher retries the
call, never passes it; a replica whose engine broke fails its health check and Serve replaces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from ray import serve

from callqc.judge import JudgeSettings
from callqc.judge.engines import JudgeEngine, JudgeEngineError, make_engine
from callqc.judge.judge import Judge as CallJudge
from callqc.models import CallMetadata, Finding, JudgeSummary, Transcript
from callqc.rules import EngineHolder, default_pack_path
from callqc.settings import load_settings
from deployments.rules import FIRST_POLL_WAIT_S, pack_watcher

log = logging.getLogger(__name__)

# Changing one of these reloads the model; the rest apply to the next batch.
_RELOAD = (
    "engine",
    "model",
    "threads",
    "n_parallel",
    "ctx_size",
    "device",
    "dtype",
    "max_num_seqs",
    "gpu_memory_utilization",
    "cpu_kvcache_gb",
    "enable_prefix_caching",
)


@serve.deployment(name="Judge")
class Judge:
    def __init__(self) -> None:
        self.settings = load_settings()
        self.holder = EngineHolder(self.settings.rules.pack_path or default_pack_path())
        self.watcher = pack_watcher(self.settings, self.holder)
        self._task: asyncio.Task[None] | None = None
        if self.watcher is not None:
            self._task = asyncio.get_running_loop().create_task(self.watcher.run())
        self.judge: JudgeSettings | None = None
        self.engine: JudgeEngine | None = None
        self._judges: dict[str, CallJudge] = {}
        self._apply(self.settings.judge)

    def _apply(self, judge: JudgeSettings) -> None:
        if self.judge is None or any(getattr(judge, k) != getattr(self.judge, k) for k in _RELOAD):
            self._close_engine()
            self.engine = make_engine(judge, self.settings)
        elif self.engine is not None:
            self.engine.settings = judge  # type: ignore[attr-defined]
        self.judge = judge
        self._judges.clear()
        self._batched.set_max_batch_size(judge.batch_max_calls)
        self._batched.set_batch_wait_timeout_s(judge.batch_wait_seconds)

    def _close_engine(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Serve ``user_config``: JudgeSettings fields for this environment (validated; reloads if needed)."""
        self._apply(JudgeSettings.model_validate({**self.settings.judge.model_dump(), **(user_config or {})}))

    async def review(
        self, transcript: Transcript, metadata: CallMetadata, findings: list[Finding], pack_version: str
    ) -> tuple[list[Finding], JudgeSummary]:
        """The call's findings after review and what the judge did; raises ``JudgeEngineError`` (retry)."""
        result = await self._batched(transcript, metadata, findings, pack_version)
        if isinstance(result, Exception):
            raise result
        return result

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.5)
    async def _batched(
        self,
        transcripts: list[Transcript],
        metadatas: list[CallMetadata],
        findings: list[list[Finding]],
        pack_versions: list[str],
    ) -> list[tuple[list[Finding], JudgeSummary] | Exception]:
        await self._first_poll()
        if self.engine is not None and not self.engine.healthy:
            # Timed out with requests that never came back, or the runtime failed: this replica cannot
            # judge; the calls go back for retry and check_health makes Serve replace the replica (a fresh
            # process: the old engine's threads may still hold its memory).
            return [JudgeEngineError(f"judge engine unhealthy ({self.engine.name})")] * len(transcripts)
        pack = self.holder.engine.pack
        if any(v and v != pack.version for v in pack_versions):
            log.info("judging with pack %s (rules ran with %s)", pack.version, sorted(set(pack_versions)))
        judge = self._judges.get(pack.sha256 or pack.version)
        if judge is None:
            judge = self._judges[pack.sha256 or pack.version] = CallJudge(self.engine, pack, self.judge)
        calls = list(zip(transcripts, metadatas, findings, strict=True))
        try:
            return list(await asyncio.to_thread(judge.review_many, calls))
        except JudgeEngineError as err:
            return [err] * len(calls)

    async def check_health(self) -> None:
        """Serve restarts a replica whose engine broke (see ``_batched``)."""
        if self.engine is not None and not self.engine.healthy:
            raise RuntimeError(f"judge engine {self.engine.name} is unhealthy; replacing the replica")

    async def info(self) -> dict[str, Any]:
        """Engine, model, prompt version and engine counters (for operators)."""
        pack = self.holder.engine.pack
        if self.engine is None:
            return {"engine": "none", "pack": pack.version}
        return {
            "engine": self.engine.name,
            "model": self.engine.model_version,
            "healthy": self.engine.healthy,
            "pack": pack.version,
            "prompt_version": CallJudge(None, pack).prompt_version,
            **vars(self.engine.stats),
        }

    async def _first_poll(self) -> None:
        if self.watcher is not None and not self.watcher.first_poll.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.watcher.first_poll.wait(), FIRST_POLL_WAIT_S)
