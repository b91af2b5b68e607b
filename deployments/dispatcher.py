"""Dispatcher (the application's ingress): pulls stored batches and drives each call through the stages.

Exactly one replica: it is the only reader of the open-batch markers. Capacity comes from the
stage deployments; ``dispatcher.max_in_flight`` bounds how many calls it keeps in the pipeline.
"""

from __future__ import annotations

import asyncio
import dataclasses

from ray import serve
from ray.serve.handle import DeploymentHandle

from callqc import telemetry
from callqc.asr import AsrSegment
from callqc.dispatcher import Dispatcher as CallDispatcher
from callqc.jobs import job_store_from_settings
from callqc.models import CallMetadata, CallSpec, ChannelLayout, Finding, Transcript
from callqc.pipeline import Judged, PreparedAudio, RuleResult, Transcribed
from callqc.report import Report
from callqc.settings import load_settings
from callqc.speakers import SpeakerResult


class HandleStages:
    """The pipeline's stages, each a call to a Serve deployment (references in, small structs out)."""

    def __init__(
        self,
        audio: DeploymentHandle,
        asr: DeploymentHandle,
        speakers: DeploymentHandle,
        rules: DeploymentHandle,
        judge: DeploymentHandle,
        report: DeploymentHandle,
    ) -> None:
        self.audio, self.asr, self.speakers_h, self.rules_h = audio, asr, speakers, rules
        self.judge_h, self.report = judge, report

    async def prepare(self, spec: CallSpec) -> PreparedAudio:
        return await self.audio.prepare.remote(spec)

    async def transcribe(self, pcm_key: str, language: str) -> Transcribed:
        return await self.asr.transcribe.remote(pcm_key, language)

    async def speakers(
        self,
        channel_segments: dict[int, list[AsrSegment]],
        layout: ChannelLayout,
        pcm_keys: list[str],
        duration: float,
        language: str,
    ) -> SpeakerResult:
        return await self.speakers_h.label.remote(channel_segments, layout, pcm_keys, duration, language)

    async def rules(self, transcript: Transcript, metadata: CallMetadata) -> RuleResult:
        return await self.rules_h.evaluate.remote(transcript, metadata)

    async def judge(
        self, transcript: Transcript, metadata: CallMetadata, candidates: list[Finding], pack_version: str
    ) -> Judged:
        findings, summary = await self.judge_h.review.remote(transcript, metadata, candidates, pack_version)
        return Judged(findings, summary)

    async def write_report(self, report: Report) -> str:
        return await self.report.write.remote(report)


@serve.deployment(name="Dispatcher", num_replicas=1)
class Dispatcher:
    def __init__(
        self,
        audio: DeploymentHandle,
        asr: DeploymentHandle,
        speakers: DeploymentHandle,
        rules: DeploymentHandle,
        judge: DeploymentHandle,
        report: DeploymentHandle,
    ) -> None:
        settings = load_settings()
        telemetry.configure("callqc-dispatcher", settings.telemetry, settings.telemetry.dispatcher_metrics_port)
        stages = HandleStages(audio, asr, speakers, rules, judge, report)
        self.dispatcher = CallDispatcher(job_store_from_settings(settings), stages, settings.dispatcher)
        self._stop = asyncio.Event()
        self._loop_task = asyncio.get_running_loop().create_task(self.dispatcher.run_forever(self._stop))

    async def stats(self) -> dict:
        """In-flight calls, open batches, done / failed / retried counts."""
        return dataclasses.asdict(self.dispatcher.stats)

    async def check_health(self) -> None:
        if self._loop_task.done():
            raise RuntimeError(f"dispatcher loop stopped: {self._loop_task.exception()!r}")

    async def __del__(self) -> None:
        self._stop.set()
