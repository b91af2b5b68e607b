"""Pull stored work into the pipeline with a bounded number of calls in flight.

The dispatcher owns no state that matters: everything is re-read from S3 after a restart. Calls
found RUNNING (a crash mid-call) are simply run again; the report key is deterministic, so a retry
overwrites the same object instead of duplicating it. Run exactly one dispatcher per bucket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from callqc import telemetry
from callqc.errors import CallErrorCode, CallProcessingError
from callqc.jobs import BatchManifest, CallStatus, JobStore
from callqc.models import CallSpec, CallState
from callqc.pipeline import Stages, inspect_call
from callqc.settings import DispatcherSettings

log = logging.getLogger(__name__)


def processing_error(err: BaseException) -> CallProcessingError | None:
    """The CallProcessingError behind ``err``, also when Ray wrapped it in a task error."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, CallProcessingError):
            return current
        seen.add(id(current))
        current = getattr(current, "cause", None) or current.__cause__
    return None


@dataclass
class DispatcherStats:
    in_flight: int = 0
    open_batches: int = 0
    done: int = 0
    failed: int = 0
    retried: int = 0
    last_error: str = ""


@dataclass
class _BatchState:
    manifest: BatchManifest
    terminal: set[str] = field(default_factory=set)


class Dispatcher:
    def __init__(self, jobs: JobStore, stages: Stages, settings: DispatcherSettings) -> None:
        self.jobs = jobs
        self.stages = stages
        self.settings = settings
        self.stats = DispatcherStats()
        self._batches: dict[str, _BatchState] = {}
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}

    async def _load_batch(self, batch_id: str) -> _BatchState | None:
        manifest = await asyncio.to_thread(self.jobs.get_manifest, batch_id)
        if manifest is None:
            log.warning("open marker for %s has no manifest; ignoring", batch_id)
            return None
        statuses = await asyncio.to_thread(self.jobs.statuses, manifest)
        state = _BatchState(manifest, {s.call_id for s in statuses if s.state.terminal})
        self._batches[batch_id] = state
        return state

    async def poll_once(self) -> int:
        """Start as many queued calls as the in-flight bound allows; returns how many started."""
        started = 0
        open_ids = await asyncio.to_thread(self.jobs.open_batches)
        self.stats.open_batches = len(open_ids)
        for batch_id in open_ids:
            try:
                state = self._batches.get(batch_id) or await self._load_batch(batch_id)
            except Exception as err:  # one unreadable manifest must not stall the batches after it
                self.stats.last_error = f"batch {batch_id}: {type(err).__name__}: {err}"
                log.error("cannot load batch %s, skipping it: %s", batch_id, err)
                continue
            if state is None:
                continue
            for spec in state.manifest.calls:
                if len(self._tasks) >= self.settings.max_in_flight:
                    return started
                key = (batch_id, spec.call_id)
                if spec.call_id in state.terminal or key in self._tasks:
                    continue
                task = asyncio.create_task(self._run_call(state, spec), name=f"call:{batch_id}/{spec.call_id}")
                self._tasks[key] = task
                task.add_done_callback(lambda _t, key=key: self._tasks.pop(key, None))
                started += 1
            busy = any(k[0] == batch_id for k in self._tasks)
            if not busy and len(state.terminal) >= len(state.manifest.calls):
                await asyncio.to_thread(self.jobs.close_batch, batch_id)
                self._batches.pop(batch_id, None)
        self.stats.in_flight = len(self._tasks)
        telemetry.QUEUE_DEPTH.set(sum(len(b.manifest.calls) - len(b.terminal) for b in self._batches.values()))
        return started

    async def _run_call(self, state: _BatchState, spec: CallSpec) -> None:
        batch_id = state.manifest.batch_id
        status = await asyncio.to_thread(self.jobs.get_status, batch_id, spec.call_id)
        if status.state.terminal:
            state.terminal.add(spec.call_id)
            return
        if status.attempts >= self.settings.max_attempts:  # e.g. left RUNNING by crashes, again and again
            self.stats.failed += 1
            final = status.model_copy(
                update={
                    "state": CallState.FAILED,
                    "error": CallErrorCode.PROCESSING_FAILED,
                    "error_message": f"gave up after {status.attempts} attempts (interrupted each time)",
                }
            )
            await asyncio.to_thread(self.jobs.set_status, batch_id, final)
            state.terminal.add(spec.call_id)
            return
        status.state = CallState.RUNNING
        status.attempts += 1
        await asyncio.to_thread(self.jobs.set_status, batch_id, status)
        final = await self._attempt(batch_id, spec, status)
        await asyncio.to_thread(self.jobs.set_status, batch_id, final)
        if final.state.terminal:
            state.terminal.add(spec.call_id)

    async def _attempt(self, batch_id: str, spec: CallSpec, status: CallStatus) -> CallStatus:
        with telemetry.continue_call_trace(spec.trace_context, spec.call_id, batch_id, status.attempts) as span:
            telemetry.IN_FLIGHT.inc()
            try:
                final = await self._inspect(batch_id, spec, status)
            finally:
                telemetry.IN_FLIGHT.dec()
            span.set_attribute("callqc.state", final.state.value)
            if final.error:
                span.set_attribute("callqc.error", final.error.value)
                telemetry.CALLS_FAILED.labels(error=final.error.value).inc()
            elif final.state == CallState.DONE:
                telemetry.CALLS_PROCESSED.inc()
            return final

    async def _inspect(self, batch_id: str, spec: CallSpec, status: CallStatus) -> CallStatus:
        try:
            _report, key = await inspect_call(spec, batch_id, self.stages)
        except Exception as err:  # every failure ends in a recorded status, never a lost call
            known = processing_error(err)
            if known is not None:
                self.stats.failed += 1
                return status.model_copy(
                    update={"state": CallState.FAILED, "error": known.code, "error_message": known.message}
                )
            self.stats.last_error = f"{type(err).__name__}: {err}"
            log.exception("call %s/%s attempt %d failed", batch_id, spec.call_id, status.attempts)
            if status.attempts >= self.settings.max_attempts:
                self.stats.failed += 1
                return status.model_copy(
                    update={
                        "state": CallState.FAILED,
                        "error": CallErrorCode.PROCESSING_FAILED,
                        "error_message": f"gave up after {status.attempts} attempts: {self.stats.last_error}"[:2000],
                    }
                )
            self.stats.retried += 1
            return status.model_copy(update={"state": CallState.QUEUED, "error_message": self.stats.last_error})
        self.stats.done += 1
        return status.model_copy(
            update={"state": CallState.DONE, "report_key": key, "error": None, "error_message": ""}
        )

    async def run_forever(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                await self.poll_once()
            except Exception as err:  # S3 briefly unreachable: keep polling
                self.stats.last_error = f"poll: {type(err).__name__}: {err}"
                log.warning("dispatcher poll failed: %s", err)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.settings.poll_seconds)

    async def drain(self) -> None:
        """Wait for the calls in flight to finish."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)
