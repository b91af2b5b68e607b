"""ASR stage: faster-whisper on one stored PCM channel per request."""

from __future__ import annotations

import asyncio

from ray import serve

from callqc.asr import Transcriber, resolve_model_dir
from callqc.pipeline import ChannelTranscriber, Transcribed
from callqc.settings import load_settings
from callqc.storage import open_store


@serve.deployment(name="ASR")
class ASR:
    def __init__(self) -> None:
        settings = load_settings()
        model_dir = resolve_model_dir(settings.asr)
        self.transcriber = ChannelTranscriber(open_store(settings), Transcriber(settings.asr, model_dir))

    async def transcribe(self, pcm_key: str, language: str) -> Transcribed:
        return await asyncio.to_thread(self.transcriber.transcribe, pcm_key, language)
