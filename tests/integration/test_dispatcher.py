"""callqc.dispatcher.Dispatcher with fake stages (no models) and the real JobStore on the real S3 server.

Driven with ``poll_once()`` + ``drain()`` loops bounded by iteration count; no wall-clock asserts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections import Counter

import pytest

from callqc.asr import AsrSegment, AsrWord
from callqc.audio import AudioError
from callqc.dispatcher import Dispatcher, processing_error
from callqc.errors import CallErrorCode
from callqc.jobs import BatchManifest, CallStatus, JobStore, batch_id_for
from callqc.models import (
    CallMetadata,
    CallSpec,
    CallState,
    ChannelLayout,
    ConversationMetrics,
    Finding,
    JudgeSummary,
    Severity,
    Transcript,
)
from callqc.pipeline import Judged, PreparedAudio, RuleResult, Stages, Transcribed
from callqc.report import Report
from callqc.settings import DispatcherSettings, Settings
from callqc.speakers import SpeakerResult, label_speakers
from callqc.storage import ObjectStore

pytestmark = pytest.mark.integration

GUARD_SECONDS = 30  # deadlock guard only; never asserted on


class FakeStages:
    """Canned stage results; records calls, injects failures, measures concurrency of whole calls.

    ``failures[call_id]`` is a list of exceptions raised by ``prepare`` on successive attempts (``None``
    = succeed); ``always_fail`` maps call ids to an exception raised on every attempt. With ``overlap``
    set, each call waits in ``prepare`` until ``overlap`` calls are in flight (or all remaining ones),
    so the bound is actually reached rather than merely not exceeded.
    """

    def __init__(
        self,
        jobs: JobStore,
        *,
        failures: dict[str, list[Exception | None]] | None = None,
        always_fail: dict[str, Exception] | None = None,
        overlap: int = 0,
        total_calls: int = 0,
        hang_after_report: set[str] | None = None,
    ) -> None:
        self.jobs = jobs
        self.failures = {k: list(v) for k, v in (failures or {}).items()}
        self.always_fail = always_fail or {}
        self.overlap = overlap
        self.total_calls = total_calls
        self.hang_after_report = hang_after_report or set()
        self.prepared: Counter[str] = Counter()
        self.reports: Counter[str] = Counter()
        self.active = 0
        self.peak = 0
        self.completed = 0
        self.hanging = asyncio.Event()
        self._changed = asyncio.Condition()

    async def prepare(self, spec: CallSpec) -> PreparedAudio:
        self.prepared[spec.call_id] += 1
        await asyncio.sleep(0)
        if spec.call_id in self.always_fail:
            raise self.always_fail[spec.call_id]
        planned = self.failures.get(spec.call_id)
        if planned:
            error = planned.pop(0)
            if error is not None:
                raise error
        async with self._changed:
            self.active += 1
            self.peak = max(self.peak, self.active)
            self._changed.notify_all()
            if self.overlap:
                target = min(self.overlap, self.total_calls - self.completed)
                await asyncio.wait_for(self._changed.wait_for(lambda: self.active >= target), GUARD_SECONDS)
        sha = hashlib.sha256(spec.call_id.encode()).hexdigest()
        channels = 1 if spec.channel_layout == ChannelLayout.MONO else 2
        keys = [f"work/{spec.call_id}/ch{i}.s16le" for i in range(channels)]
        return PreparedAudio(sha256=sha, duration=12.5, sample_rate=16000, channel_keys=keys)

    async def transcribe(self, pcm_key: str, language: str) -> Transcribed:
        await asyncio.sleep(0)
        channel = int(pcm_key.rsplit("ch", 1)[-1].split(".")[0])
        start = 1.0 + channel
        words = [AsrWord("你好", start, start + 0.5, 0.9)]
        return Transcribed([AsrSegment(start, start + 0.8, f"channel {channel}", words)], "fake-asr/1")

    async def speakers(
        self,
        channel_segments: dict[int, list[AsrSegment]],
        layout: ChannelLayout,
        pcm_keys: list[str],
        duration: float,
        language: str,
    ) -> SpeakerResult:
        segments, roles = label_speakers(channel_segments, layout, language)
        return SpeakerResult(segments=segments, roles=roles, conversation=ConversationMetrics(duration=duration))

    async def judge(
        self, transcript: Transcript, metadata: CallMetadata, candidates: list[Finding], pack_version: str
    ) -> Judged:
        return Judged(candidates, JudgeSummary(status="skipped"))

    async def rules(self, transcript: Transcript, metadata: CallMetadata) -> RuleResult:
        found = Finding(rule_id="F03", name="fake", severity=Severity.S2, segment_ids=[transcript.segments[0].id])
        return RuleResult([found], "fake-pack/1")

    async def write_report(self, report: Report) -> str:
        key = await asyncio.to_thread(
            self.jobs.put_report, report.batch_id, report.call_id, report.model_dump_json().encode()
        )
        self.reports[report.call_id] += 1
        async with self._changed:
            self.active -= 1
            self.completed += 1
            self._changed.notify_all()
        if report.call_id in self.hang_after_report:  # a crash after the report, before the status
            self.hanging.set()
            await asyncio.Event().wait()
        return key


def _is_stages(stages: Stages) -> Stages:
    """Static check (for type checkers) that FakeStages satisfies the Stages protocol."""
    return stages


@pytest.fixture()
def jobs(store: ObjectStore, settings: Settings) -> JobStore:
    return JobStore(store, settings.s3, io_threads=8)


def submit(jobs: JobStore, request_id: str, call_ids: list[str]) -> BatchManifest:
    manifest = BatchManifest(
        batch_id=batch_id_for("local", request_id),
        request_id=request_id,
        client="local",
        request_digest=request_id,
        calls=[CallSpec(call_id=c, audio_key=f"audio/{c}.wav") for c in call_ids],
    )
    stored, created = jobs.create_batch(manifest)
    assert created
    return stored


async def run_until_closed(dispatcher: Dispatcher, jobs: JobStore, max_iterations: int = 20) -> int:
    """Poll and drain until no batch is open; returns the iterations used."""
    for iteration in range(1, max_iterations + 1):
        await dispatcher.poll_once()
        await dispatcher.drain()
        if not await asyncio.to_thread(jobs.open_batches):
            return iteration
    raise AssertionError(f"batches still open after {max_iterations} polls: {jobs.open_batches()}")


def states(jobs: JobStore, manifest: BatchManifest) -> dict[str, CallStatus]:
    return {s.call_id: s for s in jobs.statuses(manifest)}


def dispatcher_for(jobs: JobStore, stages: FakeStages, **settings: int) -> Dispatcher:
    return Dispatcher(jobs, _is_stages(stages), DispatcherSettings(**settings))


# ---- tests -----------------------------------------------------------------------------------------


def test_all_calls_end_done_with_reports(jobs: JobStore, store: ObjectStore) -> None:
    manifest = submit(jobs, "r1", ["c1", "c2", "c3"])

    async def main() -> FakeStages:
        stages = FakeStages(jobs)
        await run_until_closed(dispatcher_for(jobs, stages, max_in_flight=2), jobs)
        return stages

    stages = asyncio.run(main())
    final = states(jobs, manifest)
    assert {c: s.state for c, s in final.items()} == dict.fromkeys(["c1", "c2", "c3"], CallState.DONE)
    for call_id, status in final.items():
        assert status.report_key == jobs.report_key(manifest.batch_id, call_id)
        assert status.attempts == 1
        assert status.error is None
        report = Report.model_validate_json(store.get_bytes(status.report_key))
        assert (report.call_id, report.batch_id, report.verdict) == (call_id, manifest.batch_id, "needs_review")
        assert report.versions.asr_model == "fake-asr/1"
        assert [seg.text for seg in report.transcript] == ["channel 0", "channel 1"]
    assert jobs.open_batches() == []
    assert not store.exists(jobs.open_key(manifest.batch_id))
    assert stages.prepared == Counter({"c1": 1, "c2": 1, "c3": 1})


def test_audio_error_fails_that_call_only(jobs: JobStore) -> None:
    manifest = submit(jobs, "r-audio", ["good1", "bad", "good2"])
    stages = FakeStages(jobs, always_fail={"bad": AudioError(CallErrorCode.AUDIO_UNDECODABLE, "not audio")})

    async def main() -> Dispatcher:
        dispatcher = dispatcher_for(jobs, stages, max_in_flight=3, max_attempts=3)
        await run_until_closed(dispatcher, jobs)
        return dispatcher

    dispatcher = asyncio.run(main())
    final = states(jobs, manifest)
    bad = final["bad"]
    assert (bad.state, bad.error, bad.error_message, bad.attempts) == (
        CallState.FAILED,
        CallErrorCode.AUDIO_UNDECODABLE,
        "not audio",
        1,
    )
    assert bad.report_key == ""
    assert stages.prepared["bad"] == 1  # a CallProcessingError is not retried
    assert final["good1"].state == final["good2"].state == CallState.DONE
    assert (dispatcher.stats.done, dispatcher.stats.failed, dispatcher.stats.retried) == (2, 1, 0)
    assert jobs.open_batches() == []


def test_wrapped_processing_error_is_found() -> None:
    """Ray wraps task errors; the code must still be found through ``cause``/``__cause__``."""

    class TaskError(Exception):
        def __init__(self, cause: BaseException) -> None:
            super().__init__("task failed")
            self.cause = cause

    inner = AudioError(CallErrorCode.AUDIO_EMPTY, "nothing")
    assert processing_error(TaskError(inner)) is inner
    try:
        try:
            raise inner
        except AudioError as err:
            raise RuntimeError("wrapped") from err
    except RuntimeError as outer:
        assert processing_error(outer) is inner
    assert processing_error(RuntimeError("plain")) is None


def test_transient_error_is_retried(jobs: JobStore) -> None:
    manifest = submit(jobs, "r-retry", ["c1", "flaky"])
    stages = FakeStages(jobs, failures={"flaky": [ConnectionError("S3 hiccup"), None]})

    async def main() -> Dispatcher:
        dispatcher = dispatcher_for(jobs, stages, max_in_flight=2, max_attempts=3)
        await run_until_closed(dispatcher, jobs)
        return dispatcher

    dispatcher = asyncio.run(main())
    flaky = states(jobs, manifest)["flaky"]
    assert (flaky.state, flaky.attempts, flaky.error, flaky.error_message) == (CallState.DONE, 2, None, "")
    assert flaky.report_key
    assert stages.prepared["flaky"] == 2
    assert dispatcher.stats.retried == 1
    assert "S3 hiccup" in dispatcher.stats.last_error


def test_queued_again_between_attempts(jobs: JobStore) -> None:
    """After a transient failure the call is recorded QUEUED with the attempt counted."""
    manifest = submit(jobs, "r-between", ["flaky"])
    stages = FakeStages(jobs, failures={"flaky": [TimeoutError("slow"), None]})

    async def one_poll() -> None:
        dispatcher = dispatcher_for(jobs, stages, max_attempts=3)
        await dispatcher.poll_once()
        await dispatcher.drain()

    asyncio.run(one_poll())
    status = states(jobs, manifest)["flaky"]
    assert (status.state, status.attempts) == (CallState.QUEUED, 1)
    assert "slow" in status.error_message
    assert jobs.open_batches() == [manifest.batch_id]


def test_always_failing_call_gives_up_after_max_attempts(jobs: JobStore) -> None:
    manifest = submit(jobs, "r-give-up", ["ok", "doomed"])
    stages = FakeStages(jobs, always_fail={"doomed": RuntimeError("model crashed")})

    async def main() -> Dispatcher:
        dispatcher = dispatcher_for(jobs, stages, max_in_flight=2, max_attempts=3)
        await run_until_closed(dispatcher, jobs)
        return dispatcher

    dispatcher = asyncio.run(main())
    doomed = states(jobs, manifest)["doomed"]
    assert (doomed.state, doomed.error, doomed.attempts) == (CallState.FAILED, CallErrorCode.PROCESSING_FAILED, 3)
    assert "gave up after 3 attempts" in doomed.error_message
    assert "model crashed" in doomed.error_message
    assert stages.prepared["doomed"] == 3
    assert states(jobs, manifest)["ok"].state == CallState.DONE
    assert (dispatcher.stats.retried, dispatcher.stats.failed) == (2, 1)


@pytest.mark.parametrize("bound", [1, 2, 3])
def test_max_in_flight_is_never_exceeded(jobs: JobStore, bound: int) -> None:
    first = submit(jobs, "r-a", [f"a{i}" for i in range(4)])
    second = submit(jobs, "r-b", [f"b{i}" for i in range(3)])
    stages = FakeStages(jobs, overlap=bound, total_calls=7)

    async def main() -> list[int]:
        dispatcher = dispatcher_for(jobs, stages, max_in_flight=bound)
        started = []
        for _ in range(20):
            started.append(await dispatcher.poll_once())
            running = [t for t in asyncio.all_tasks() if t.get_name().startswith("call:") and not t.done()]
            assert len(running) <= bound
            await dispatcher.drain()
            if not await asyncio.to_thread(jobs.open_batches):
                break
        return started

    started = asyncio.run(main())
    assert max(started) <= bound
    assert sum(started) == 7
    assert stages.peak == bound  # reached, never exceeded
    for manifest in (first, second):
        assert all(s.state == CallState.DONE for s in jobs.statuses(manifest))


def test_restart_resumes_a_running_call_without_duplicate_reports(jobs: JobStore, store: ObjectStore) -> None:
    manifest = submit(jobs, "r-restart", ["c1", "c2", "c3"])
    crash_name = f"call:{manifest.batch_id}/c2"

    async def first_life() -> None:
        """c2 writes its report and then the process 'dies' before recording DONE."""
        stages = FakeStages(jobs, hang_after_report={"c2"})
        dispatcher = dispatcher_for(jobs, stages, max_in_flight=3)
        assert await dispatcher.poll_once() == 3
        await asyncio.wait_for(stages.hanging.wait(), GUARD_SECONDS)
        for task in asyncio.all_tasks():
            if task.get_name() == crash_name:
                task.cancel()
        await dispatcher.drain()

    asyncio.run(first_life())
    assert store.exists(jobs.report_key(manifest.batch_id, "c2"))  # written before the crash
    before = states(jobs, manifest)
    assert (before["c2"].state, before["c2"].attempts) == (CallState.RUNNING, 1)
    assert before["c1"].state == before["c3"].state == CallState.DONE
    assert jobs.open_batches() == [manifest.batch_id]

    second = FakeStages(jobs)

    async def second_life() -> None:
        await run_until_closed(dispatcher_for(jobs, second, max_in_flight=3), jobs)

    asyncio.run(second_life())
    after = states(jobs, manifest)
    assert all(s.state == CallState.DONE for s in after.values())
    assert after["c2"].attempts == 2
    assert second.prepared == Counter({"c2": 1})  # finished calls are not redone
    prefix = f"{jobs.reports}{manifest.batch_id}/"
    assert store.list_keys(prefix) == [f"{prefix}{c}.json" for c in ("c1", "c2", "c3")]
    assert store.list_keys(f"{jobs.reports}latest/") == [f"{jobs.reports}latest/{c}.json" for c in ("c1", "c2", "c3")]
    assert jobs.open_batches() == []


def test_open_marker_without_manifest_is_ignored(jobs: JobStore, store: ObjectStore) -> None:
    store.put_bytes(jobs.open_key("bghost"), b"bghost")
    manifest = submit(jobs, "r-real", ["c1"])

    async def main() -> None:
        dispatcher = dispatcher_for(jobs, FakeStages(jobs))
        for _ in range(5):
            await dispatcher.poll_once()
            await dispatcher.drain()

    asyncio.run(main())
    assert states(jobs, manifest)["c1"].state == CallState.DONE
    assert jobs.open_batches() == ["bghost"]


def test_batch_with_every_call_already_terminal_is_closed(jobs: JobStore) -> None:
    manifest = submit(jobs, "r-finished", ["c1", "c2"])
    for call_id in ("c1", "c2"):
        jobs.set_status(manifest.batch_id, CallStatus(call_id=call_id, state=CallState.DONE, attempts=1))
    stages = FakeStages(jobs)

    async def main() -> int:
        return await run_until_closed(dispatcher_for(jobs, stages), jobs)

    assert asyncio.run(main()) == 1
    assert sum(stages.prepared.values()) == 0


def test_unreadable_manifest_does_not_block_other_batches(jobs: JobStore, store: ObjectStore) -> None:
    poison = "a-poison"  # open_batches() is sorted: this one comes first
    store.put_bytes(jobs.manifest_key(poison), b'{"batch_id": "a-poison", "calls": "not a list"}')
    store.put_bytes(jobs.open_key(poison), poison.encode())
    manifest = submit(jobs, "r-healthy", ["c1"])

    async def main() -> None:
        dispatcher = dispatcher_for(jobs, FakeStages(jobs))
        for _ in range(5):  # as run_forever does: a failed poll is logged and retried
            with contextlib.suppress(Exception):
                await dispatcher.poll_once()
            await dispatcher.drain()

    asyncio.run(main())
    assert states(jobs, manifest)["c1"].state == CallState.DONE
