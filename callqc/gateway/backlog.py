"""Admission control: how many accepted calls are still unfinished, refreshed in the background.

Concurrent submissions must not overshoot the cap: a batch reserves its calls when it is admitted (no
``await`` between the check and the reservation), and settles the reservation once its manifest is stored
or refused. A refresh from S3 keeps the calls accepted while it was listing, so an in-flight listing that
missed a new manifest cannot erase it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from callqc.jobs import JobStore
from callqc.operations import queue_depth

log = logging.getLogger(__name__)


class BacklogMonitor:
    """Keeps an estimate of the unfinished calls (queued + running in open batches) from S3."""

    def __init__(self, jobs: JobStore, limit: int, refresh_seconds: float) -> None:
        self.jobs = jobs
        self.limit = limit
        self.refresh_seconds = refresh_seconds
        self.unfinished = 0  # stored, unfinished calls as of the last refresh plus those accepted since
        self.reserved = 0  # calls of admitted batches whose manifests are being stored
        self._accepted_total = 0
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> int:
        accepted_before = self._accepted_total
        depth = await asyncio.to_thread(queue_depth, self.jobs)
        # Calls accepted while the listing ran may be missing from it: count them (at worst twice, until
        # the next refresh), never drop them.
        self.unfinished = depth.queued_calls + depth.running_calls + (self._accepted_total - accepted_before)
        return self.unfinished

    def admit(self, new_calls: int) -> tuple[bool, str]:
        """May a batch of ``new_calls`` be accepted now? (False, reason) when the backlog is full.

        An admitted batch holds a reservation of ``new_calls`` until :meth:`settle` is called.
        """
        if self.limit and self.unfinished + self.reserved + new_calls > self.limit:
            return False, (
                f"backlog is full: {self.unfinished + self.reserved} accepted calls unfinished, "
                f"limit {self.limit}; retry with the same request_id after a back-off"
            )
        self.reserved += new_calls
        return True, ""

    def settle(self, reserved: int, accepted: int) -> None:
        """Release an admitted batch's reservation; ``accepted`` of its calls were stored for inspection."""
        self.reserved = max(0, self.reserved - reserved)
        self.unfinished += accepted
        self._accepted_total += accepted

    def start(self) -> None:
        if self.limit and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as err:  # S3 briefly unreachable: keep the last estimate
                log.warning("backlog refresh failed: %s", err)
            await asyncio.sleep(self.refresh_seconds)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
