"""Compliance rule pack and rule engine (pure domain code: no Ray, no network).

pack = load_rule_pack(default_pack_path())
engine = RuleEngine(pack)
findings = engine.evaluate(transcript, metadata)
per_call = engine.evaluate_many(transcripts, metadatas)  # one scan for the batch
"""

from callqc.rules.engine import RuleEngine, RuleRun
from callqc.rules.holder import EngineHolder
from callqc.rules.pack import RulePack, RulePackError, default_pack_path, load_rule_pack
from callqc.rules.records import CallRecord, record_to_call, transcript_from_turns
from callqc.rules.watcher import PackWatcher

__all__ = [
    "CallRecord",
    "EngineHolder",
    "PackWatcher",
    "RuleEngine",
    "RulePack",
    "RulePackError",
    "RuleRun",
    "default_pack_path",
    "load_rule_pack",
    "record_to_call",
    "transcript_from_turns",
]
