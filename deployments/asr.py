"""ASR stage: channel requests from concurrent calls are gathered (``@serve.batch``) and decoded together.

Per-environment settings come from ``asr`` in callqc's settings, overridden by the deployment's
``user_config`` in the Serve config (e.g. ``{device: cuda, compute_type: float16, batch_size: 16}``
with ``ray_actor_options: {num_gpus: 0.25}``): the same deployment runs int8 on CPU or float16 on a
fraction of a GPU.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ray import serve

from callqc.asr import Transcriber, resolve_model_dir
from callqc.pipeline import ChannelTranscriber, Transcribed
from callqc.settings import AsrSettings, load_settings
from callqc.storage import open_store

_RELOAD = ("model_dir", "model_name", "device", "compute_type", "cpu_threads", "num_workers")


@serve.deployment(name="ASR")
class ASR:
    def __init__(self) -> None:
        self.settings = load_settings()
        self.store = open_store(self.settings)
        self.asr: AsrSettings | None = None
        self.transcriber: ChannelTranscriber | None = None
        self._apply(self.settings.asr)

    def _apply(self, asr: AsrSettings) -> None:
        if self.asr is None or any(getattr(asr, k) != getattr(self.asr, k) for k in _RELOAD):
            model = Transcriber(asr, resolve_model_dir(asr, self.settings))
            self.transcriber = ChannelTranscriber(self.store, model)
        else:
            assert self.transcriber is not None
            self.transcriber.transcriber.settings = self.transcriber.transcriber.decoder.settings = asr
        self.asr = asr
        self._batched.set_max_batch_size(asr.batch_max_requests)
        self._batched.set_batch_wait_timeout_s(asr.batch_wait_seconds)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Serve ``user_config``: AsrSettings fields for this environment (validated; reloads if needed)."""
        self._apply(AsrSettings.model_validate({**self.settings.asr.model_dump(), **(user_config or {})}))

    async def transcribe(self, pcm_key: str, language: str) -> Transcribed:
        result = await self._batched(pcm_key, language)
        if isinstance(result, Exception):
            raise result
        return result

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def _batched(self, pcm_keys: list[str], languages: list[str]) -> list[Transcribed | Exception]:
        assert self.transcriber is not None
        return await asyncio.to_thread(self.transcriber.transcribe_many, list(zip(pcm_keys, languages, strict=True)))

    async def info(self) -> dict[str, Any]:
        """Model version, device, compute type and decoding counters (for operators)."""
        assert self.transcriber is not None
        model = self.transcriber.transcriber
        return {"model": model.version, "device": model.device, "compute_type": model.compute_type, **vars(model.stats)}
