"""One trace per call: gateway (intake) → dispatcher (inspect) → a span per stage, with call and batch ids.

The real gateway over a socket stores the trace context in the manifest; a dispatcher with fake stages
(no models) continues it. Spans are captured with OpenTelemetry's in-memory exporter.
"""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import REGISTRY

from callqc.audio import AudioError
from callqc.dispatcher import Dispatcher
from callqc.errors import CallErrorCode
from callqc.jobs import JobStore
from callqc.models import CallSpec
from callqc.settings import DispatcherSettings

from .conftest import GatewayFactory
from .test_dispatcher import FakeStages, run_until_closed
from .test_gateway import audio_bytes

pytestmark = pytest.mark.integration
STAGES = {"stage.audio", "stage.asr", "stage.speakers", "stage.rules", "stage.judge", "stage.report"}


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):  # first test module to ask installs the SDK provider
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


def test_one_trace_per_call_spans_gateway_dispatcher_and_every_stage(
    spans: InMemorySpanExporter, make_gateway: GatewayFactory, jobs: JobStore
) -> None:
    spans.clear()
    client = make_gateway()
    key = client.upload_bytes(audio_bytes(3), "t.wav").audio_key
    reply = client.submit("trace-1", [CallSpec(call_id="t1", audio_key=key), CallSpec(call_id="t2", audio_key=key)])
    processed_before = REGISTRY.get_sample_value("callqc_calls_processed_total") or 0.0
    dispatcher = Dispatcher(jobs, FakeStages(jobs), DispatcherSettings(max_in_flight=2, poll_seconds=0.01))
    asyncio.run(run_until_closed(dispatcher, jobs))
    assert REGISTRY.get_sample_value("callqc_calls_processed_total") == processed_before + 2
    assert REGISTRY.get_sample_value("callqc_queue_depth") == 0

    finished = spans.get_finished_spans()
    by_call: dict[str, list] = {}
    for span in finished:
        call_id = span.attributes.get("callqc.call_id")
        if call_id:
            by_call.setdefault(call_id, []).append(span)
    assert set(by_call) == {"t1", "t2"}
    trace_ids = set()
    for call_id, own in by_call.items():
        root = next(s for s in own if s.name == "callqc.call.accepted")
        inspect = next(s for s in own if s.name == "callqc.inspect")
        assert root.parent is None
        assert root.attributes["callqc.batch_id"] == reply.batch_id
        assert inspect.parent.span_id == root.context.span_id
        assert inspect.context.trace_id == root.context.trace_id
        stages = [s for s in finished if s.parent is not None and s.parent.span_id == inspect.context.span_id]
        assert {s.name for s in stages} == STAGES, call_id
        assert all(s.context.trace_id == root.context.trace_id for s in stages)
        trace_ids.add(root.context.trace_id)
    assert len(trace_ids) == 2  # a trace per call, not per batch


def test_a_failing_stage_marks_its_span_and_the_call(
    spans: InMemorySpanExporter, make_gateway: GatewayFactory, jobs: JobStore
) -> None:
    spans.clear()
    client = make_gateway()
    key = client.upload_bytes(audio_bytes(4), "u.wav").audio_key
    client.submit("trace-2", [CallSpec(call_id="bad", audio_key=key)])
    failing = FakeStages(jobs, always_fail={"bad": AudioError(CallErrorCode.AUDIO_UNDECODABLE, "junk")})
    asyncio.run(run_until_closed(Dispatcher(jobs, failing, DispatcherSettings(poll_seconds=0.01)), jobs))
    finished = spans.get_finished_spans()
    inspect = next(s for s in finished if s.name == "callqc.inspect")
    assert inspect.attributes["callqc.error"] == "AUDIO_UNDECODABLE"
    audio = next(s for s in finished if s.name == "stage.audio")
    assert audio.status.status_code == StatusCode.ERROR
