"""The application graph, composed in one place. Replicas and resources live in the Serve config YAML."""

from __future__ import annotations

from ray.serve import Application

from deployments.asr import ASR
from deployments.audio_prep import AudioPrep
from deployments.dispatcher import Dispatcher
from deployments.judge import Judge
from deployments.report import ReportWriter
from deployments.rules import Rules
from deployments.speakers import Speakers


def build_app(args: dict | None = None) -> Application:
    return Dispatcher.bind(
        AudioPrep.bind(), ASR.bind(), Speakers.bind(), Rules.bind(), Judge.bind(), ReportWriter.bind()
    )


app = build_app()
