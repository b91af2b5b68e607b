"""One call through every stage: audio → ASR per channel → speakers → rules → report.

The orchestration is written once against the :class:`Stages` protocol. Ray Serve supplies stages
backed by deployment handles (``deployments/``); :class:`LocalStages` runs the same stages in
this process (tests, ``callqc inspect``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Protocol

from callqc import __version__, telemetry
from callqc.asr import AsrSegment, Transcriber
from callqc.audio import AudioError, decode, from_pcm16, to_pcm16
from callqc.errors import CallErrorCode
from callqc.models import CallMetadata, CallSpec, ChannelLayout, Finding, Segment, Transcript
from callqc.report import Report, Versions, build_report
from callqc.settings import AudioSettings
from callqc.speakers import SPEAKERS_VERSION, merge_channels
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


class Stages(Protocol):
    async def prepare(self, spec: CallSpec) -> PreparedAudio: ...
    async def transcribe(self, pcm_key: str, language: str) -> Transcribed: ...
    async def speakers(self, channel_segments: dict[int, list[AsrSegment]], layout: ChannelLayout) -> list[Segment]: ...
    async def rules(self, transcript: Transcript, metadata: CallMetadata) -> RuleResult: ...
    async def write_report(self, report: Report) -> str: ...


# ---- stage implementations (plain Python; deployments wrap them) ------------------------------


class AudioPreparer:
    """Fetch the call's audio, validate and decode it once, store normalised PCM per channel."""

    def __init__(self, store: ObjectStore, settings: AudioSettings, work_prefix: str = "work/") -> None:
        self.store = store
        self.settings = settings
        self.work_prefix = work_prefix

    def prepare(self, spec: CallSpec) -> PreparedAudio:
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
        decoded = decode(data, spec.channel_layout, self.settings)
        if spec.audio_sha256 and spec.audio_sha256.lower() != decoded.sha256:
            raise AudioError(
                CallErrorCode.CHECKSUM_MISMATCH,
                f"audio sha256 is {decoded.sha256}, the submission said {spec.audio_sha256}",
            )
        keys = []
        for index, samples in enumerate(decoded.channels):
            key = f"{self.work_prefix}{decoded.sha256}/{decoded.sample_rate}/ch{index}.s16le"
            if not self.store.exists(key):
                self.store.put_bytes(key, to_pcm16(samples))
            keys.append(key)
        return PreparedAudio(decoded.sha256, decoded.duration, decoded.sample_rate, keys)


class ChannelTranscriber:
    """Transcribe one stored PCM channel."""

    def __init__(self, store: ObjectStore, transcriber: Transcriber) -> None:
        self.store = store
        self.transcriber = transcriber

    def transcribe(self, pcm_key: str, language: str) -> Transcribed:
        audio = from_pcm16(self.store.get_bytes(pcm_key))
        return Transcribed(self.transcriber.transcribe(audio, language), self.transcriber.version)


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
        segments = await stages.speakers(channel_segments, spec.channel_layout)
    transcript = Transcript(language=spec.language, duration=audio.duration, segments=segments)
    with timed("rules"):
        ruled = await stages.rules(transcript, spec.metadata)

    versions = Versions(
        pipeline=f"callqc/{__version__}",
        asr_model=results[0].model_version if results else "",
        rule_pack=ruled.pack_version,
        speakers=SPEAKERS_VERSION,
    )
    report = build_report(
        spec,
        batch_id,
        audio_sha256=audio.sha256,
        duration=audio.duration,
        transcript=segments,
        findings=ruled.findings,
        versions=versions,
        stage_seconds=timings,
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


class LocalStages:
    """All stages in this process, blocking work in threads. For tests and single-call CLI use."""

    def __init__(
        self, store: ObjectStore, job_store, audio_settings: AudioSettings, transcriber: Transcriber, rule_engine
    ) -> None:
        self.preparer = AudioPreparer(store, audio_settings)
        self.channel_transcriber = ChannelTranscriber(store, transcriber)
        self.job_store = job_store
        self.rule_engine = rule_engine

    async def prepare(self, spec: CallSpec) -> PreparedAudio:
        return await asyncio.to_thread(self.preparer.prepare, spec)

    async def transcribe(self, pcm_key: str, language: str) -> Transcribed:
        return await asyncio.to_thread(self.channel_transcriber.transcribe, pcm_key, language)

    async def speakers(self, channel_segments: dict[int, list[AsrSegment]], layout: ChannelLayout) -> list[Segment]:
        return merge_channels(channel_segments, layout)

    async def rules(self, transcript: Transcript, metadata: CallMetadata) -> RuleResult:
        findings = self.rule_engine.evaluate(transcript, metadata)
        return RuleResult(findings, self.rule_engine.pack.version)

    async def write_report(self, report: Report) -> str:
        data = report.model_dump_json().encode()
        return await asyncio.to_thread(self.job_store.put_report, report.batch_id, report.call_id, data)
