"""Decode + validate stage: fetch the audio from S3, check it, store normalised PCM per channel.

Untrusted bytes are decoded in a child process with CPU-time, memory and time limits
(``audio.decode_*`` settings): a hostile file fails its own call, never this replica.
"""

from __future__ import annotations

import asyncio

from ray import serve

from callqc.models import CallSpec
from callqc.pipeline import AudioPreparer, PreparedAudio
from callqc.settings import load_settings
from callqc.storage import open_store


@serve.deployment(name="AudioPrep")
class AudioPrep:
    def __init__(self) -> None:
        settings = load_settings()
        self.preparer = AudioPreparer(open_store(settings), settings.audio)

    async def prepare(self, spec: CallSpec) -> PreparedAudio:
        return await asyncio.to_thread(self.preparer.prepare, spec)
