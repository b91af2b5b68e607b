"""Admission control: how many accepted calls are still unfinished, refreshed in the background."""

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
        self.unfinished = 0
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> int:
        depth = await asyncio.to_thread(queue_depth, self.jobs)
        self.unfinished = depth.queued_calls + depth.running_calls
        return self.unfinished

    def admit(self, new_calls: int) -> tuple[bool, str]:
        """May a batch of ``new_calls`` be accepted now? (False, reason) when the backlog is full."""
        if not self.limit or self.unfinished + new_calls <= self.limit:
            return True, ""
        return False, (
            f"backlog is full: {self.unfinished} accepted calls unfinished, limit {self.limit}; "
            f"retry with the same request_id after a back-off"
        )

    def note_accepted(self, calls: int) -> None:
        self.unfinished += calls

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
