"""Rules stage: the compiled compliance rule pack over the transcript and call metadata.

With ``rules.pack_key`` set, the pack is read from that S3 key and hot-reloaded every
``rules.reload_seconds`` (a ``PackWatcher`` task on the replica's event loop): a new version goes
live without a restart, a broken one is refused and the running one stays (see ``status``).
Every ``RuleResult`` carries the version of the pack that produced it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from ray import serve

from callqc.models import CallMetadata, Transcript
from callqc.pipeline import RuleResult
from callqc.rules import EngineHolder, default_pack_path
from callqc.rules.watcher import Fetch, PackWatcher
from callqc.settings import Settings, load_settings
from callqc.storage import ObjectStore, open_store, read_maybe_plaintext

FIRST_POLL_WAIT_S = 10.0


def pack_fetcher(store: ObjectStore, key: str) -> Fetch:
    """Read the pack at ``key`` (client-side encrypted, or plaintext as an operator uploaded it)."""
    return lambda: read_maybe_plaintext(store, key)


def pack_watcher(settings: Settings, holder: EngineHolder, store: ObjectStore | None = None) -> PackWatcher | None:
    """The watcher for ``rules.pack_key`` (``None`` when no key is configured)."""
    key = settings.rules.pack_key
    if not key:
        return None
    interval = settings.rules.reload_seconds
    store = store if store is not None else open_store(settings)
    return PackWatcher(holder, pack_fetcher(store, key), interval, source=f"s3://{settings.s3.bucket}/{key}")


@serve.deployment(name="Rules")
class Rules:
    def __init__(self) -> None:
        settings = load_settings()
        self.holder = EngineHolder(settings.rules.pack_path or default_pack_path())
        self.watcher = pack_watcher(settings, self.holder)
        self._task: asyncio.Task[None] | None = None
        if self.watcher is not None:
            self._task = asyncio.get_running_loop().create_task(self.watcher.run())

    async def evaluate(self, transcript: Transcript, metadata: CallMetadata) -> RuleResult:
        await self._first_poll()
        engine = self.holder.engine  # one engine for the whole call: findings and version agree
        return RuleResult(engine.evaluate(transcript, metadata), engine.pack.version)

    async def evaluate_many(self, calls: Sequence[tuple[Transcript, CallMetadata]]) -> list[RuleResult]:
        """Several calls in one scan (cheaper per call than ``evaluate`` one by one)."""
        await self._first_poll()
        engine = self.holder.engine
        findings = engine.evaluate_many([t for t, _ in calls], [m for _, m in calls])
        return [RuleResult(f, engine.pack.version) for f in findings]

    async def status(self) -> dict[str, Any]:
        """The running pack and, with a pack key, the watcher's last poll, reload and refusal."""
        if self.watcher is None:
            pack = self.holder.engine.pack
            return {"source": "local", "version": pack.version, "sha256": pack.sha256}
        return self.watcher.status()

    async def _first_poll(self) -> None:
        """Do not judge calls with the built-in pack while the configured one is being fetched
        (for at most FIRST_POLL_WAIT_S: with the store down, calls go on with the running pack)."""
        if self.watcher is not None and not self.watcher.first_poll.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.watcher.first_poll.wait(), FIRST_POLL_WAIT_S)
