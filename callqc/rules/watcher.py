"""Hot reload of a rule pack from any storage: poll a ``fetch() -> bytes | None`` callable.

watcher = PackWatcher(holder, lambda: store.get_bytes(key), interval=30)
task = asyncio.get_running_loop().create_task(watcher.run())

Each poll fetches the pack bytes and, when they differ from the running pack, validates and compiles
them off the event loop, then swaps the engine in. A pack that fails (``RulePackError``) is refused
(and not compiled again while the store holds the same bytes): the running pack stays in force and
``status()`` names the rejected version, the rule and the reason. Fetch errors are logged and
retried on the next poll; nothing raises out of ``run``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

import yaml

from callqc.rules.holder import EngineHolder
from callqc.rules.pack import RulePackError

log = logging.getLogger(__name__)

Fetch = Callable[[], bytes | None]


def _declared_version(data: bytes) -> str:
    """The ``version:`` a (possibly broken) pack declares, for the status of a refused pack."""
    try:
        doc = yaml.safe_load(data)
    except yaml.YAMLError:
        return ""
    return str(doc.get("version", "")) if isinstance(doc, dict) else ""


class PackWatcher:
    """Polls ``fetch`` every ``interval`` seconds and reloads ``holder`` when the pack changes."""

    def __init__(self, holder: EngineHolder, fetch: Fetch, interval: float = 30.0, source: str = "") -> None:
        self.holder = holder
        self.fetch = fetch
        self.interval = interval
        self.source = source  # where the pack comes from, for the status (e.g. an S3 key)
        self.polls = 0
        self.reloads = 0
        self.last_poll: float | None = None
        self.last_reload: float | None = None
        self.last_error: dict[str, str] | None = None  # the last poll's failure, if it failed
        self.rejected: dict[str, str] | None = None  # the pack last refused, until a newer one goes live
        self.first_poll = asyncio.Event()  # set once the first poll has finished, whatever its outcome

    async def poll_once(self) -> bool:
        """One fetch-and-maybe-reload (blocking work runs in a thread); True when a new pack went live."""
        self.polls += 1
        self.last_poll = time.time()
        try:
            data = await asyncio.to_thread(self.fetch)
        except Exception as exc:  # storage down, network, credentials: keep the running pack
            log.warning("rule pack fetch from %s failed: %s", self.source or "source", exc)
            self.last_error = {"stage": "fetch", "version": "", "where": "", "reason": f"{type(exc).__name__}: {exc}"}
            return False
        digest = hashlib.sha256(data).hexdigest() if data is not None else ""
        if data is None or digest == self.holder.engine.pack.sha256:
            self.last_error = None
            return False
        if self.rejected is not None and digest == self.rejected["sha256"]:
            self.last_error = self.rejected  # still the refused pack: do not compile it again
            return False
        try:
            changed = await asyncio.to_thread(self.holder.reload_if_changed, data)
        except RulePackError as exc:
            version = _declared_version(data)
            log.error("rule pack %s from %s refused, keeping %s: %s", version, self.source, self.holder.version, exc)
            self.rejected = {"stage": "load", "version": version, "where": exc.where, "reason": exc.reason}
            self.rejected["sha256"] = digest
            self.last_error = self.rejected
            return False
        except Exception as exc:  # a bug must not kill the loop or the running engine
            log.exception("rule pack reload from %s failed", self.source)
            self.last_error = {"stage": "load", "version": "", "where": "", "reason": f"{type(exc).__name__}: {exc}"}
            return False
        self.rejected = self.last_error = None
        if changed:
            self.reloads += 1
            self.last_reload = time.time()
            log.info("rule pack %s from %s is live", self.holder.version, self.source)
        return changed

    async def run(self) -> None:
        """Poll forever (until cancelled); never raises anything else."""
        while True:
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # pragma: no cover - poll_once already catches everything it expects
                log.exception("rule pack watcher poll failed")
            finally:
                self.first_poll.set()
            await asyncio.sleep(self.interval)

    def status(self) -> dict[str, Any]:
        """What is running, what was last refused and why (for a health or status endpoint)."""
        pack = self.holder.engine.pack
        return {
            "source": self.source,
            "version": pack.version,
            "sha256": pack.sha256,
            "interval_s": self.interval,
            "polls": self.polls,
            "reloads": self.reloads,
            "last_poll": self.last_poll,
            "last_reload": self.last_reload,
            "last_error": self.last_error,
            "rejected": self.rejected,
        }
