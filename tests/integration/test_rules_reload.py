"""Hot reload of the rule pack from a real S3 server: v1 → v2 goes live, a broken v3 is refused."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from callqc.models import CallMetadata
from callqc.rules import EngineHolder, PackWatcher, transcript_from_turns
from callqc.settings import Settings
from callqc.storage import ObjectStore

pytestmark = pytest.mark.integration

KEY = "rulepacks/current.yaml"
V1 = """
version: "2026.12.1"
rules:
  - id: X01
    name: 威胁
    type: keyword
    severity: S0
    category: prohibited
    phrases: [打断你的腿]
"""
V2 = V1.replace("2026.12.1", "2026.12.2").replace("[打断你的腿]", "[打断你的腿, 收拾你]")
BROKEN = V2.replace("2026.12.2", "2026.12.3").replace("phrases: [打断你的腿, 收拾你]", "regexes: ['(a)\\1']")
CALL = transcript_from_turns([("agent", "今晚我就收拾你")])


def _rule_ids(holder: EngineHolder) -> list[str]:
    return [f.rule_id for f in holder.evaluate(CALL)]


def test_watcher_reloads_from_s3_and_keeps_the_pack_in_force_on_a_broken_one(store: ObjectStore) -> None:
    store.put_bytes(KEY, V1.encode())
    holder = EngineHolder(store.get_bytes(KEY))
    watcher = PackWatcher(holder, lambda: store.get_bytes(KEY), interval=3600, source=KEY)
    assert asyncio.run(watcher.poll_once()) is False
    assert holder.version == "2026.12.1" and _rule_ids(holder) == []

    store.put_bytes(KEY, V2.encode())
    assert asyncio.run(watcher.poll_once()) is True
    assert holder.version == "2026.12.2" and _rule_ids(holder) == ["X01"]

    store.put_bytes(KEY, BROKEN.encode())
    assert asyncio.run(watcher.poll_once()) is False
    assert holder.version == "2026.12.2" and _rule_ids(holder) == ["X01"]
    status = watcher.status()
    assert status["version"] == "2026.12.2" and status["reloads"] == 1
    error = status["last_error"]
    assert error["version"] == "2026.12.3" and error["where"] == "rule X01" and "back-reference" in error["reason"]


def test_rules_deployment_wires_the_watcher(settings: Settings, store: ObjectStore, monkeypatch) -> None:
    """The Serve deployment class (constructed directly, no Ray cluster) reads its pack from the key."""
    from deployments import rules as deployment

    store.put_bytes(KEY, V2.encode())
    rules_settings = SimpleNamespace(pack_path="", pack_key=KEY, reload_seconds=3600.0)
    monkeypatch.setattr(deployment, "load_settings", lambda: settings.model_copy(update={"rules": rules_settings}))
    monkeypatch.setattr(deployment, "open_store", lambda _settings: store)
    cls = deployment.Rules.func_or_class

    async def scenario() -> tuple:
        replica = cls()
        first = await replica.evaluate(CALL, CallMetadata())
        both = await replica.evaluate_many([(CALL, CallMetadata()), (CALL, CallMetadata())])
        store.put_bytes(KEY, BROKEN.encode())
        await replica.watcher.poll_once()
        status = await replica.status()
        plain = getattr(store, "inner", store)  # an operator's upload, not client-side encrypted
        plain.put_bytes(KEY, V1.encode())
        reloaded = await replica.watcher.poll_once()
        replica._task.cancel()
        return first, both, status, reloaded and replica.holder.version

    first, both, status, version = asyncio.run(scenario())
    assert version == "2026.12.1"
    assert first.pack_version == "2026.12.2" and [f.rule_id for f in first.findings] == ["X01"]
    assert [r.findings for r in both] == [first.findings, first.findings]
    assert status["version"] == "2026.12.2" and status["source"].endswith(KEY)
    assert status["last_error"]["where"] == "rule X01"
