"""PackWatcher: reloads on change, keeps the running pack on a broken one, never raises out of its loop."""

from __future__ import annotations

import asyncio

import pytest

from callqc.rules import EngineHolder, PackWatcher, transcript_from_turns

V1 = """
version: "1.0.0"
rules:
  - id: X01
    name: 威胁
    type: keyword
    severity: S0
    category: prohibited
    phrases: [打断你的腿]
"""
V2 = V1.replace('"1.0.0"', '"2.0.0"').replace("[打断你的腿]", "[打断你的腿, 收拾你]")
BROKEN = V2.replace('"2.0.0"', '"3.0.0"').replace("phrases: [打断你的腿, 收拾你]", "regexes: ['(?<=a)b']")


class Source:
    """A fake storage: returns ``data``, or raises ``error``."""

    def __init__(self, data: str | None) -> None:
        self.data = data
        self.error: Exception | None = None
        self.fetches = 0

    def __call__(self) -> bytes | None:
        self.fetches += 1
        if self.error is not None:
            raise self.error
        return None if self.data is None else self.data.encode()


def _hits(holder: EngineHolder, text: str) -> int:
    return len(holder.evaluate(transcript_from_turns([("agent", text)])))


def test_reload_on_change_only() -> None:
    holder = EngineHolder(V1)
    source = Source(V1)
    watcher = PackWatcher(holder, source, interval=5)
    assert asyncio.run(watcher.poll_once()) is False  # same bytes as the running pack
    assert _hits(holder, "我收拾你") == 0
    source.data = V2
    assert asyncio.run(watcher.poll_once()) is True
    assert holder.version == "2.0.0" and _hits(holder, "我收拾你") == 1
    assert asyncio.run(watcher.poll_once()) is False
    status = watcher.status()
    assert status["version"] == "2.0.0" and status["reloads"] == 1 and status["polls"] == 3
    assert status["last_error"] is None


def test_broken_pack_is_refused_once_and_named() -> None:
    holder = EngineHolder(V2)
    source = Source(BROKEN)
    watcher = PackWatcher(holder, source, interval=5, source="s3://b/packs/current.yaml")
    assert asyncio.run(watcher.poll_once()) is False
    assert holder.version == "2.0.0" and _hits(holder, "我收拾你") == 1
    error = watcher.status()["last_error"]
    assert error["version"] == "3.0.0" and error["where"] == "rule X01" and "look-behind" in error["reason"]
    assert asyncio.run(watcher.poll_once()) is False  # the same broken bytes are not compiled again
    assert watcher.status()["last_error"] == error == watcher.status()["rejected"]
    source.error = TimeoutError("slow store")
    assert asyncio.run(watcher.poll_once()) is False
    assert watcher.status()["last_error"]["stage"] == "fetch" and watcher.status()["rejected"] == error
    source.error, source.data = None, V1
    assert asyncio.run(watcher.poll_once()) is True
    assert watcher.status()["last_error"] is None and watcher.status()["rejected"] is None


def test_fetch_errors_and_missing_objects_keep_the_running_pack() -> None:
    holder = EngineHolder(V1)
    source = Source(None)
    watcher = PackWatcher(holder, source, interval=5)
    assert asyncio.run(watcher.poll_once()) is False
    source.error = ConnectionError("S3 is down")
    assert asyncio.run(watcher.poll_once()) is False
    assert watcher.status()["last_error"]["reason"] == "ConnectionError: S3 is down"
    assert holder.version == "1.0.0"
    source.error, source.data = None, V1
    assert asyncio.run(watcher.poll_once()) is False and watcher.status()["last_error"] is None


def test_run_polls_until_cancelled_and_survives_errors() -> None:
    async def scenario() -> tuple[int, str]:
        holder = EngineHolder(V1)
        source = Source(V2)
        watcher = PackWatcher(holder, source, interval=0.001)
        task = asyncio.get_running_loop().create_task(watcher.run())
        await asyncio.wait_for(watcher.first_poll.wait(), 5)
        source.error = RuntimeError("boom")

        async def three_more_polls() -> None:
            while source.fetches < 4:
                await asyncio.sleep(0.001)

        await asyncio.wait_for(three_more_polls(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return source.fetches, holder.version

    fetches, version = asyncio.run(scenario())
    assert fetches >= 4 and version == "2.0.0"
