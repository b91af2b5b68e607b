"""One call through every stage: audio → ASR per channel → speakers → rules → judge → report.

The orchestration is written once against the :class:`Stages` protocol; Ray Serve supplies stages
backed by deployment handles (``deployments/``), tests supply fakes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from callqc import __version__, telemetry
from callqc.asr import AsrSegment, Transcriber
from callqc.audio import AudioError, decode_file, expected_channels, from_pcm16
from callqc.errors import CallErrorCode, CallProcessingError
from callqc.models import CallMetadata, CallSpec, ChannelLayout, Finding, JudgeSummary, Transcript
from callqc.report import Report, Versions, build_report
from callqc.settings import AudioSettings
from callqc.speakers import SpeakerResult
from callqc.storage import ObjectNotFound, ObjectStore, read_maybe_plaintext


@dataclass(frozen=True)
class PreparedAudio:
    sha256: str
    duration: float
    sample_rate: int
    channel_keys: list[str]  # normalised 16 kHz s16le PCM per channel, in the bucket


@dataclass(frozen=True)
class Transcribed:
    segments: list[AsrSegment]
    model_version: str


@dataclass(frozen=True)
class RuleResult:
    findings: list[Finding]
    pack_version: str


@dataclass(frozen=True)
class Judged:
    """The judge's merged findings (confirmed, uncertain, new; rejected candidates dropped) and summary."""

    findings: list[Finding]
    summary: JudgeSummary


class Stages(Protocol):
    async def prepare(self, spec: CallSpec) -> PreparedAudio: ...
    async def transcribe(self, pcm_key: str, language: str) -> Transcribed: ...
    async def speakers(
        self,
        channel_segments: dict[int, list[AsrSegment]],
        layout: ChannelLayout,
        pcm_keys: list[str],
        duration: float,
        language: str,
    ) -> SpeakerResult: ...
    async def rules(self, transcript: Transcript, metadata: CallMetadata) -> RuleResult: ...
    async def judge(
        self, transcript: Transcript, metadata: CallMetadata, candidates: list[Finding], pack_version: str
    ) -> Judged: ...
    async def write_report(self, report: Report) -> str: ...


# ---- stage implementations (plain Python; deployments wrap them) ------------------------------


class AudioPreparer:
    """Fetch the call's audio, verify it, decode it once (isolated, capped), store 16 kHz PCM per channel.

    The work is keyed by the audio's sha256: a retry, or the same recording in another batch, reuses
    the stored channels (``work/<sha256>/<rate>/``) without decoding again.
    """

    def __init__(self, store: ObjectStore, settings: AudioSettings, work_prefix: str = "work/") -> None:
        self.store = store
        self.settings = settings
        self.work_prefix = work_prefix

    def _fetch(self, spec: CallSpec) -> bytes:
        info = self.store.stat(spec.audio_key)
        if info is None:
            raise AudioError(CallErrorCode.AUDIO_NOT_FOUND, f"no object {spec.audio_key!r} in the audio bucket")
        if info.size > self.settings.max_bytes:
            raise AudioError(
                CallErrorCode.AUDIO_TOO_LARGE, f"audio is {info.size} bytes; the cap is {self.settings.max_bytes}"
            )
        try:
            data = read_maybe_plaintext(self.store, spec.audio_key)
        except ObjectNotFound as err:
            raise AudioError(CallErrorCode.AUDIO_NOT_FOUND, f"no object {spec.audio_key!r}") from err
        if not data:
            raise AudioError(CallErrorCode.AUDIO_EMPTY, "audio object is empty (0 bytes)")
        return data

    def _reuse(self, meta_key: str, spec: CallSpec) -> PreparedAudio | None:
        """The stored result of an earlier decode of the same bytes, still valid under today's caps."""
        if not self.store.exists(meta_key):
            return None
        meta = self.store.get_json(meta_key)
        want = expected_channels(spec.channel_layout)
        if len(meta["channel_keys"]) != want:
            raise AudioError(
                CallErrorCode.CHANNEL_MISMATCH,
                f"channel layout {spec.channel_layout.value} needs {want} channel(s); the file has "
                f"{len(meta['channel_keys'])}",
            )
        if meta["duration"] > self.settings.max_duration_seconds:
            return None  # decode again: the decoder reports the cap precisely
        if not all(self.store.exists(key) for key in meta["channel_keys"]):
            return None
        return PreparedAudio(meta["sha256"], meta["duration"], meta["sample_rate"], list(meta["channel_keys"]))

    def prepare(self, spec: CallSpec) -> PreparedAudio:
        data = self._fetch(spec)
        sha256 = hashlib.sha256(data).hexdigest()
        if spec.audio_sha256 and spec.audio_sha256.lower() != sha256:
            raise AudioError(
                CallErrorCode.CHECKSUM_MISMATCH, f"audio sha256 is {sha256}, the submission said {spec.audio_sha256}"
            )
        rate = self.settings.sample_rate
        prefix = f"{self.work_prefix}{sha256}/{rate}/"
        reused = self._reuse(prefix + "audio.json", spec)
        if reused is not None:
            return reused
        with tempfile.TemporaryDirectory(prefix="callqc-audio-") as tmp:
            source = Path(tmp) / "input"
            source.write_bytes(data)
            del data
            decoded = decode_file(source, spec.channel_layout, self.settings, Path(tmp))
            keys = []
            for index, path in enumerate(decoded.paths):
                key = f"{prefix}ch{index}.s16le"
                with path.open("rb") as fh:
                    self.store.put_stream(key, fh, path.stat().st_size)
                keys.append(key)
        prepared = PreparedAudio(sha256, decoded.duration, rate, keys)
        self.store.put_json(
            prefix + "audio.json",
            {
                "sha256": sha256,
                "duration": decoded.duration,
                "sample_rate": rate,
                "channel_keys": keys,
                "source": dataclasses.asdict(decoded.probe),
            },
        )
        return prepared


class ChannelTranscriber:
    """Transcribe stored PCM channels: one, or many from several calls in one batch (the ASR deployment)."""

    def __init__(self, store: ObjectStore, transcriber: Transcriber) -> None:
        self.store = store
        self.transcriber = transcriber

    def transcribe(self, pcm_key: str, language: str) -> Transcribed:
        result = self.transcribe_many([(pcm_key, language)])[0]
        if isinstance(result, Exception):
            raise result
        return result

    def transcribe_many(self, requests: Sequence[tuple[str, str]]) -> list[Transcribed | Exception]:
        """One result per (pcm_key, language), in order; a request's own failure is returned, not raised.

        A bad language hint is a per-call error; a missing PCM object (``ObjectNotFound``) is left to
        the dispatcher's retry. The rest of the batch is transcribed either way.
        """
        results: list[Transcribed | Exception | None] = [None] * len(requests)
        ready: list[tuple[int, np.ndarray, str]] = []
        for index, (pcm_key, language) in enumerate(requests):
            try:
                self.transcriber.language(language)
                ready.append((index, from_pcm16(self.store.get_bytes(pcm_key)), language))
            except (CallProcessingError, ObjectNotFound) as err:
                results[index] = err
        segments = self.transcriber.transcribe_many([(audio, language) for _i, audio, language in ready])
        for (index, _audio, _language), found in zip(ready, segments, strict=True):
            results[index] = Transcribed(found, self.transcriber.version)
        return [r if r is not None else RuntimeError("not transcribed") for r in results]


# ---- orchestration ---------------------------------------------------------------------------


async def inspect_call(spec: CallSpec, batch_id: str, stages: Stages) -> tuple[Report, str]:
    """Run every stage for one call; returns the report and the key it was stored under."""
    timings: dict[str, float] = {}

    def timed(stage: str, **attributes: str | int | float):
        return _Timed(stage, timings, attributes)

    with timed("audio"):
        audio = await stages.prepare(spec)
    with timed("asr", channels=len(audio.channel_keys), audio_seconds=round(audio.duration, 2)):
        results = await asyncio.gather(*(stages.transcribe(key, spec.language) for key in audio.channel_keys))
    channel_segments = {index: result.segments for index, result in enumerate(results)}
    with timed("speakers"):
        spoken = await stages.speakers(
            channel_segments, spec.channel_layout, audio.channel_keys, audio.duration, spec.language
        )
    transcript = Transcript(language=spec.language, duration=audio.duration, segments=spoken.segments)
    with timed("rules"):
        ruled = await stages.rules(transcript, spec.metadata)
    with timed("judge", candidates=len(ruled.findings)):
        judged = await stages.judge(transcript, spec.metadata, ruled.findings, ruled.pack_version)

    versions = Versions(
        pipeline=f"callqc/{__version__}",
        asr_model=results[0].model_version if results else "",
        rule_pack=ruled.pack_version,
        speakers=spoken.version,
        judge_model=judged.summary.model,
        prompt=judged.summary.prompt_version,
    )
    report = build_report(
        spec,
        batch_id,
        audio_sha256=audio.sha256,
        duration=audio.duration,
        transcript=spoken.segments,
        findings=judged.findings,
        versions=versions,
        stage_seconds=timings,
        roles=spoken.roles,
        conversation=spoken.conversation,
        judge=judged.summary,
    )
    with timed("report", findings=len(report.findings)):
        key = await stages.write_report(report)
    return report, key


class _Timed:
    """A stage's span + latency metric, and its seconds in the report."""

    def __init__(self, stage: str, timings: dict[str, float], attributes: dict[str, str | int | float]) -> None:
        self.stage, self.timings, self.attributes = stage, timings, attributes

    def __enter__(self) -> None:
        self._span = telemetry.stage_span(self.stage, **self.attributes)
        self._span.__enter__()
        self._started = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.timings[self.stage] = time.perf_counter() - self._started
        self._span.__exit__(*exc)
