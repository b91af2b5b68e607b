"""Batched whisper decoding of speech windows from many channels and calls at once.

Windows of one language are sorted by length and decoded together: one encoder call, one
``generate`` call and one word-alignment call per batch (CTranslate2 underneath faster-whisper).
On CPU each batch is encoded at its own length (``trim_windows``), not padded to whisper's 30 s,
which is where most of the CPU time went. Whisper's quality rules are kept per window: language
forced, no conditioning on previous text, temperature fallback when the text is a repetition loop
or low-confidence, and silence (high no-speech probability with low confidence) is dropped.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from callqc.settings import AsrSettings

FULL_FRAMES = 3000  # whisper's 30 s input, 100 mel frames per second
PAD_FRAMES = 60  # 0.6 s of silence after the speech when windows are trimmed (less invites repetition loops)
ROUND_FRAMES = 10  # trimmed lengths are rounded up to this (even: the encoder's stride is 2)
MIN_FRAMES = 500  # never shorter than 5 s: whisper loops on very short inputs
TOKENS_PER_SECOND = 30  # generous speech rate; caps a runaway repetition loop early
_LENGTH_RATIO = 1.5  # a batch's longest window is at most this much longer than its shortest
BEST_OF = 5  # candidates sampled at a fallback temperature
PREPEND = "\"'“¿([{-"
APPEND = "\"'.。,，!！?？:：”)]}、"


@dataclass
class Decoded:
    """One window's text, its quality numbers and its words (times relative to the window)."""

    text: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    temperature: float
    words: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class DecodeStats:
    windows: int = 0
    batches: int = 0
    fallbacks: int = 0
    dropped_silent: int = 0
    dropped_unreliable: int = 0
    encoded_frames: int = 0


def compression_ratio(text: str) -> float:
    import zlib

    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def plan_batches(frames: Sequence[int], batch_size: int, trim: bool) -> list[list[int]]:
    """Indices grouped shortest-first into batches of similar length (any length when not trimming)."""
    order = sorted(range(len(frames)), key=lambda i: frames[i])
    batches: list[list[int]] = []
    for index in order:
        last = batches[-1] if batches else None
        if (
            last is None
            or len(last) >= batch_size
            or (trim and frames[index] > _LENGTH_RATIO * frames[last[0]] + PAD_FRAMES)
        ):
            batches.append([index])
        else:
            last.append(index)
    return batches


class BatchDecoder:
    """Decode feature windows with one loaded :class:`faster_whisper.WhisperModel`."""

    def __init__(self, model: Any, settings: AsrSettings) -> None:
        self.model = model
        self.settings = settings
        self.stats = DecodeStats()
        self._tokenizers: dict[str, Any] = {}
        self._lock = threading.Lock()

    # -- pieces -------------------------------------------------------------------------------------
    def tokenizer(self, language: str) -> Any:
        if language not in self._tokenizers:
            from faster_whisper.tokenizer import Tokenizer

            multilingual = self.model.model.is_multilingual
            self._tokenizers[language] = Tokenizer(
                self.model.hf_tokenizer, multilingual, task="transcribe", language=language
            )
        return self._tokenizers[language]

    def prompt(self, language: str) -> list[int]:
        tokenizer = self.tokenizer(language)
        initial = self.settings.initial_prompt_zh if language == "zh" else ""
        previous = tokenizer.encode(" " + initial.strip()) if initial else []
        return self.model.get_prompt(tokenizer, previous, without_timestamps=True)

    def _stack(self, features: list[np.ndarray]) -> np.ndarray:
        longest = max(f.shape[-1] for f in features)
        target = FULL_FRAMES
        if self.settings.trim_windows:
            target = max(MIN_FRAMES, int(math.ceil((longest + PAD_FRAMES) / ROUND_FRAMES) * ROUND_FRAMES))
            target = min(FULL_FRAMES, target)
        batch = np.zeros((len(features), features[0].shape[0], target), dtype=np.float32)
        for row, feature in enumerate(features):
            usable = min(feature.shape[-1], target)
            batch[row, :, :usable] = feature[:, :usable]
            batch[row, :, usable:] = _silence_floor(feature)
        with self._lock:
            self.stats.encoded_frames += batch.shape[0] * target
        return batch

    def _generate(
        self, encoded: Any, language: str, count: int, temperature: float, seconds: float
    ) -> list[tuple[list[int], float, float]]:
        from faster_whisper.transcribe import get_suppressed_tokens

        tokenizer = self.tokenizer(language)
        options: dict[str, Any] = {"beam_size": self.settings.beam_size}
        if temperature > 0:
            options = {"beam_size": 1, "num_hypotheses": BEST_OF, "sampling_topk": 0}
            options["sampling_temperature"] = temperature
        prompt = self.prompt(language)
        limit = min(self.model.max_length, len(prompt) + 10 + math.ceil(seconds * TOKENS_PER_SECOND))
        results = self.model.model.generate(
            encoded,
            [prompt] * count,
            max_length=limit,
            suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
            return_scores=True,
            return_no_speech_prob=True,
            **options,
        )
        out = []
        for result in results:
            best = int(np.argmax(result.scores))
            tokens = [t for t in result.sequences_ids[best] if t < tokenizer.eot]
            length = len(result.sequences_ids[best])
            out.append((tokens, result.scores[best] * length / (length + 1), float(result.no_speech_prob)))
        return out

    def _align(self, encoded: Any, language: str, tokens: list[list[int]], frames: list[int]) -> list[list[dict]]:
        from faster_whisper.transcribe import merge_punctuations

        if not self.settings.word_timestamps or not any(tokens):
            return [[] for _ in tokens]
        alignments = self.model.find_alignment(self.tokenizer(language), tokens, encoded, frames)
        for alignment in alignments:
            merge_punctuations(alignment, PREPEND, APPEND)
        return alignments

    def _verdict(self, decoded: Decoded, last: bool) -> str:
        """keep | silent | retry | drop, following whisper's fallback rules."""
        s = self.settings
        low = decoded.avg_logprob < s.log_prob_threshold
        if decoded.no_speech_prob > s.no_speech_threshold and low:
            return "silent"
        if decoded.compression_ratio > s.compression_ratio_threshold or low:
            return "drop" if last else "retry"
        return "keep"

    # -- the batch ----------------------------------------------------------------------------------
    def _run_batch(
        self, features: list[np.ndarray], language: str, step: int, out: list[Decoded | None], indices: list[int]
    ) -> None:
        temperatures = self.settings.temperatures or [0.0]
        temperature = temperatures[step]
        last = step == len(temperatures) - 1
        encoded = self.model.encode(self._stack(features))
        seconds = max(f.shape[-1] for f in features) / 100.0
        results = self._generate(encoded, language, len(features), temperature, seconds)
        tokenizer = self.tokenizer(language)
        frames = [min(f.shape[-1], FULL_FRAMES) for f in features]
        alignments = self._align(encoded, language, [tokens for tokens, _, _ in results], frames)
        retry: list[int] = []
        verdicts: list[str] = []
        for row, ((tokens, logprob, no_speech), words) in enumerate(zip(results, alignments, strict=True)):
            text = tokenizer.decode(tokens)
            decoded = Decoded(text, logprob, no_speech, compression_ratio(text), temperature, words)
            verdict = self._verdict(decoded, last)
            if verdict == "keep":
                out[indices[row]] = decoded
            elif verdict == "retry":
                retry.append(row)
            verdicts.append(verdict)
        with self._lock:
            self.stats.batches += 1
            self.stats.dropped_silent += verdicts.count("silent")
            self.stats.dropped_unreliable += verdicts.count("drop")
            self.stats.fallbacks += len(retry)
        if retry:
            self._run_batch([features[r] for r in retry], language, step + 1, out, [indices[r] for r in retry])

    def decode(self, features: Sequence[np.ndarray], languages: Sequence[str]) -> list[Decoded | None]:
        """One result per window (None: silence or unreliable after every fallback).

        Batches run on ``num_workers`` threads at once (CTranslate2 releases the GIL), so a replica
        with two workers keeps two cores busy even when each batch is small.
        """
        out: list[Decoded | None] = [None] * len(features)
        jobs = []
        for language in sorted(set(languages)):
            members = [i for i, lang in enumerate(languages) if lang == language]
            frames = [features[i].shape[-1] for i in members]
            for batch in plan_batches(frames, self.settings.batch_size, self.settings.trim_windows):
                jobs.append((language, [members[b] for b in batch]))
        jobs.sort(key=lambda job: -sum(features[i].shape[-1] for i in job[1]))  # longest first
        with self._lock:
            self.stats.windows += len(features)

        def run(job: tuple[str, list[int]]) -> None:
            language, indices = job
            self._run_batch([features[i] for i in indices], language, 0, out, indices)

        workers = min(self.settings.num_workers, len(jobs))
        if workers <= 1:
            for job in jobs:
                run(job)
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="asr-batch") as pool:
                list(pool.map(run, jobs))
        return out


def _silence_floor(feature: np.ndarray) -> float:
    """The value whisper's log-mel gives digital silence: 8 log10 units (2 after scaling) below the peak."""
    return float(feature.max()) - 2.0 if feature.size else -1.5
