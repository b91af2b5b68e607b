"""Speakers stage: roles (stereo channel map, or mono diarization + cues) and conversation metrics.

The diarization backend is loaded once per replica from ``diarization`` in callqc's settings, overridden
by the deployment's ``user_config`` (e.g. ``{backend: nemo, nemo_checkpoint: s3://…, device: cuda}``): at
start when ``preload`` is set, else on the first mono call (stereo-only fleets never load it).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
from ray import serve

from callqc.asr import AsrSegment
from callqc.audio import from_pcm16
from callqc.conversation import conversation_metrics
from callqc.diarization import DiarizationSettings, Diarizer, make_diarizer
from callqc.models import ChannelLayout, Role, Segment
from callqc.settings import load_settings
from callqc.speakers import (
    DIARIZED_VERSION,
    SPEAKERS_VERSION,
    SpeakerResult,
    channel_roles,
    label_speakers,
    merge_channels,
)
from callqc.storage import open_store

_RELOAD = ("backend", "nemo_checkpoint", "device", "torch_threads")


@serve.deployment(name="Speakers")
class Speakers:
    def __init__(self) -> None:
        self.settings = load_settings()
        self.store = open_store(self.settings)
        self.diarization: DiarizationSettings | None = None
        self.diarizer: Diarizer | None = None
        self._loaded = False
        self._lock = threading.Lock()
        self._apply(self.settings.diarization)

    def _apply(self, diarization: DiarizationSettings) -> None:
        with self._lock:
            if self.diarization is None or any(
                getattr(diarization, k) != getattr(self.diarization, k) for k in _RELOAD
            ):
                self.diarizer, self._loaded = None, False
            elif self.diarizer is not None and hasattr(self.diarizer, "settings"):
                self.diarizer.settings = diarization  # type: ignore[attr-defined]
            self.diarization = diarization
        if diarization.preload:
            self._model()

    def _model(self) -> Diarizer | None:
        """The configured diarizer, loaded on first use (once per replica)."""
        with self._lock:
            assert self.diarization is not None
            if not self._loaded:
                self.diarizer, self._loaded = make_diarizer(self.diarization, self.settings), True
            return self.diarizer

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Serve ``user_config``: DiarizationSettings fields (validated; the model reloads if needed)."""
        self._apply(
            DiarizationSettings.model_validate({**self.settings.diarization.model_dump(), **(user_config or {})})
        )

    async def assign(self, channel_segments: dict[int, list[AsrSegment]], layout: ChannelLayout) -> list[Segment]:
        """The old interface (channel map only), kept until the pipeline calls ``label``."""
        return merge_channels(channel_segments, layout)

    async def label(
        self,
        channel_segments: dict[int, list[AsrSegment]],
        layout: ChannelLayout,
        pcm_keys: list[str],
        duration: float,
        language: str,
    ) -> SpeakerResult:
        return await asyncio.to_thread(self._label, channel_segments, layout, pcm_keys, duration, language)

    def _label(
        self,
        channel_segments: dict[int, list[AsrSegment]],
        layout: ChannelLayout,
        pcm_keys: list[str],
        duration: float,
        language: str,
    ) -> SpeakerResult:
        assert self.diarization is not None
        channels = [from_pcm16(self.store.get_bytes(key)) for key in pcm_keys]
        rate = self.settings.audio.sample_rate
        turns, version = None, SPEAKERS_VERSION
        diarizer = self._model() if layout == ChannelLayout.MONO else None
        if diarizer is not None and channels:
            turns = diarizer.diarize(channels[0], self.diarization.num_speakers)
            version = f"{DIARIZED_VERSION}+{diarizer.version}"
        segments, roles = label_speakers(
            channel_segments, layout, language, turns, self.diarization.min_role_confidence
        )
        audio: dict[Role, np.ndarray] = {}
        if layout == ChannelLayout.MONO:
            audio = {role: channels[0] for role in roles.speaker_roles.values()} if channels else {}
        else:
            audio = {role: channels[ch] for ch, role in channel_roles(layout).items() if ch < len(channels)}
        conversation = conversation_metrics(segments, duration, audio, rate, self.diarization)
        return SpeakerResult(
            segments=segments, roles=roles, conversation=conversation, turns=turns or [], version=version
        )

    async def info(self) -> dict[str, Any]:
        """Diarization backend and model version (for operators)."""
        assert self.diarization is not None
        diarizer = self.diarizer
        return {
            "backend": self.diarization.backend,
            "model": diarizer.version if diarizer else "",
            "loaded": self._loaded,
        }
