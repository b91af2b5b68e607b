"""Traces (OpenTelemetry) and metrics (Prometheus) for every call.

One trace per call: the gateway starts it when the call is accepted and stores the trace context in
the manifest; the dispatcher continues it (``callqc.inspect``) with a span per stage. Exporters are
chosen by configuration: ``none`` (default), ``console``, or ``otlp`` (endpoint from settings or the
standard ``OTEL_EXPORTER_OTLP_ENDPOINT``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Span, Status, StatusCode
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from callqc.settings import TelemetrySettings

log = logging.getLogger(__name__)
TRACER_NAME = "callqc"

CALLS_PROCESSED = Counter("callqc_calls_processed", "Calls whose inspection finished (report stored)")
CALLS_FAILED = Counter("callqc_calls_failed", "Calls that ended FAILED", ["error"])
STAGE_SECONDS = Histogram(
    "callqc_stage_seconds",
    "Seconds per pipeline stage, per call",
    ["stage"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320),
)
QUEUE_DEPTH = Gauge("callqc_queue_depth", "Accepted calls not yet DONE or FAILED (open batches)")
IN_FLIGHT = Gauge("callqc_calls_in_flight", "Calls inside the pipeline right now")
CALLS_ACCEPTED = Counter("callqc_calls_accepted", "Calls accepted by the gateway (manifest stored)")


_configured = False


def _exporter(settings: TelemetrySettings) -> SpanExporter | None:
    if settings.exporter == "console":
        return ConsoleSpanExporter()
    if settings.exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=settings.otlp_endpoint or None)
    return None


def configure(service_name: str, settings: TelemetrySettings, metrics_port: int = 0) -> None:
    """Install the tracer provider (and, with ``metrics_port``, the metrics endpoint) once per process."""
    global _configured
    if _configured:
        return
    _configured = True
    exporter = _exporter(settings)
    if exporter is not None:
        provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
    if metrics_port:
        try:
            start_http_server(metrics_port, addr=settings.metrics_host)
        except OSError as err:  # a taken port must not stop the pipeline: it inspects calls without metrics
            log.error("no Prometheus metrics: %s:%d is not available (%s)", settings.metrics_host, metrics_port, err)
            return
        log.info("Prometheus metrics on %s:%d", settings.metrics_host, metrics_port)


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def start_call_trace(call_id: str, batch_id: str) -> dict[str, str]:
    """Begin a new trace for one accepted call (a short root span); returns its context to store.

    The span is never made current (no context attach/detach per call: intake does this per call).
    """
    span = tracer().start_span(
        "callqc.call.accepted",
        context=otel_context.Context(),  # a new trace per call, not a child of the batch RPC
        attributes={"callqc.call_id": call_id, "callqc.batch_id": batch_id},
    )
    carrier: dict[str, str] = {}
    inject(carrier, context=trace.set_span_in_context(span))
    span.end()
    return carrier


@contextlib.contextmanager
def continue_call_trace(carrier: dict[str, str], call_id: str, batch_id: str, attempt: int) -> Iterator[Span]:
    """The dispatcher's span for one attempt at a call, in the trace the gateway started."""
    parent = extract(carrier) if carrier else otel_context.Context()
    attributes = {"callqc.call_id": call_id, "callqc.batch_id": batch_id, "callqc.attempt": attempt}
    with tracer().start_as_current_span("callqc.inspect", context=parent, attributes=attributes) as span:
        yield span


@contextlib.contextmanager
def stage_span(stage: str, **attributes: str | int | float) -> Iterator[Span]:
    """A span (and a latency observation) for one stage of the current call."""
    span_attributes = {f"callqc.{k}": v for k, v in attributes.items()}
    with (
        tracer().start_as_current_span(f"stage.{stage}", attributes=span_attributes) as span,
        STAGE_SECONDS.labels(stage=stage).time(),
    ):
        try:
            yield span
        except Exception as err:
            span.set_status(Status(StatusCode.ERROR, f"{type(err).__name__}: {err}"[:300]))
            raise
