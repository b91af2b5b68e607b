"""Rules stage: the compiled compliance rule pack over the transcript and call metadata."""

from __future__ import annotations

from ray import serve

from callqc.models import CallMetadata, Transcript
from callqc.pipeline import RuleResult
from callqc.rules import EngineHolder, default_pack_path
from callqc.settings import load_settings


@serve.deployment(name="Rules")
class Rules:
    def __init__(self) -> None:
        settings = load_settings()
        self.holder = EngineHolder(settings.rules.pack_path or default_pack_path())

    async def evaluate(self, transcript: Transcript, metadata: CallMetadata) -> RuleResult:
        engine = self.holder.engine
        return RuleResult(engine.evaluate(transcript, metadata), engine.pack.version)
