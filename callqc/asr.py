"""Speech recognition with faster-whisper: channels in (many at once), timed segments with words out.

One :class:`Transcriber` per process. ``transcribe_many`` takes channels from any number of calls:
each channel's speech is found on its own (:mod:`callqc.asr_vad`), the speech windows of all of
them are decoded in batches (:mod:`callqc.asr_batch`), and each channel gets back utterance
segments on its own clock (:mod:`callqc.asr_text`). The embedded default is whisper base (int8 on
CPU); production points ``asr.model_dir`` at a larger model on a volume or under an S3 prefix
(:mod:`callqc.asr_models`) and sets ``asr.device=cuda`` / ``compute_type=float16``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np

from callqc.asr_batch import BatchDecoder, DecodeStats
from callqc.asr_models import assemble_whisper_base, model_version, resolve_model_dir
from callqc.asr_text import AsrSegment, AsrWord, SimplifiedChinese, finish, whisper_language, window_segments
from callqc.asr_vad import SAMPLE_RATE, VadConfig, Window, fixed_regions, pack_windows, speech_regions
from callqc.settings import AsrSettings

T = TypeVar("T")
R = TypeVar("R")

__all__ = [
    "AsrSegment",
    "AsrWord",
    "Transcriber",
    "assemble_whisper_base",
    "model_version",
    "resolve_device",
    "resolve_model_dir",
]


def resolve_device(device: str, compute_type: str) -> tuple[str, str]:
    """``auto`` → cuda when CTranslate2 sees a GPU; compute ``auto`` → float16 on GPU, int8 on CPU."""
    import ctranslate2

    gpus = ctranslate2.get_cuda_device_count()
    if device == "auto":
        device = "cuda" if gpus else "cpu"
    if device == "cuda" and not gpus:
        raise RuntimeError("asr.device is cuda but no CUDA device is visible (give the replica num_gpus)")
    if compute_type == "auto":
        compute_type = "float16" if device == "cuda" else "int8"
    return device, compute_type


class Transcriber:
    """A loaded faster-whisper model. Thread-safe; ``transcribe_many`` batches across channels."""

    def __init__(self, settings: AsrSettings, model_dir: Path) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from faster_whisper import WhisperModel  # heavy import, only where a model is loaded

        self.settings = settings
        self.model_dir = model_dir
        self.version = model_version(model_dir, settings.model_name)
        self.device, self.compute_type = resolve_device(settings.device, settings.compute_type)
        self.model = WhisperModel(
            str(model_dir),
            device=self.device,
            compute_type=self.compute_type,
            cpu_threads=settings.cpu_threads,
            num_workers=settings.num_workers,
        )
        self.decoder = BatchDecoder(self.model, settings)
        self.vad = VadConfig(settings.vad_threshold, settings.vad_min_silence_ms, settings.vad_speech_pad_ms)
        self._t2s: SimplifiedChinese | None = None
        self._lock = threading.Lock()

    @property
    def stats(self) -> DecodeStats:
        return self.decoder.stats

    def _simplified(self) -> SimplifiedChinese:
        with self._lock:
            if self._t2s is None:
                self._t2s = SimplifiedChinese()
            return self._t2s

    def _prepare(self, index: int, audio: np.ndarray) -> list[tuple[Window, np.ndarray]]:
        """One channel's speech windows and their log-mel features."""
        regions = speech_regions(audio, self.vad) if self.settings.vad_filter else fixed_regions(audio)
        return [(w, self.model.feature_extractor(w.audio)[..., :-1]) for w in pack_windows(index, audio, regions)]

    def _map(self, fn: Callable[[T], R], items: list[T]) -> list[R]:
        """``fn`` over ``items`` on the replica's workers (the VAD and numpy release the GIL)."""
        workers = min(self.settings.num_workers, len(items))
        if workers <= 1:
            return [fn(item) for item in items]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="asr-prep") as pool:
            return list(pool.map(fn, items))

    def language(self, hint: str) -> str:
        """The whisper language for a call's hint; CallProcessingError(INVALID_CALL) if unsupported."""
        return whisper_language(hint, self.model.supported_languages)

    def transcribe(self, audio: np.ndarray, language: str) -> list[AsrSegment]:
        """One channel (16 kHz float32)."""
        return self.transcribe_many([(audio, language)])[0]

    def transcribe_many(self, requests: Sequence[tuple[np.ndarray, str]]) -> list[list[AsrSegment]]:
        """Channels of any calls, decoded together; one segment list per request, in order."""
        languages = [self.language(language) for _audio, language in requests]
        prepared = self._map(lambda item: self._prepare(*item), list(enumerate(audio for audio, _ in requests)))
        windows = [window for found in prepared for window, _features in found]
        features = [feature for found in prepared for _window, feature in found]
        decoded = self.decoder.decode(features, [languages[w.request] for w in windows])
        per_request: list[list[AsrSegment]] = [[] for _ in requests]
        for window, result in zip(windows, decoded, strict=True):
            if result is not None:
                per_request[window.request].extend(window_segments(window, result))
        out = []
        for index, (audio, _lang) in enumerate(requests):
            convert = self._simplified() if languages[index] == "zh" else None
            out.append(finish(per_request[index], len(audio) / SAMPLE_RATE, convert))
        return out
