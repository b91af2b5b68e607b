"""Exporter choice and stage spans/metrics (no network: the OTLP exporter is only constructed)."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from callqc import telemetry
from callqc.settings import TelemetrySettings


def test_exporter_follows_configuration() -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    assert telemetry._exporter(TelemetrySettings()) is None
    assert isinstance(telemetry._exporter(TelemetrySettings(exporter="console")), ConsoleSpanExporter)
    otlp = telemetry._exporter(TelemetrySettings(exporter="otlp", otlp_endpoint="http://127.0.0.1:4317"))
    assert isinstance(otlp, OTLPSpanExporter)


def test_stage_span_observes_latency_even_when_the_stage_fails() -> None:
    def count() -> float:
        return REGISTRY.get_sample_value("callqc_stage_seconds_count", {"stage": "unit-test"}) or 0.0

    before = count()
    with telemetry.stage_span("unit-test"):
        pass
    with pytest.raises(RuntimeError), telemetry.stage_span("unit-test"):
        raise RuntimeError("boom")
    assert count() == before + 2


def test_start_call_trace_returns_a_w3c_context_or_nothing() -> None:
    carrier = telemetry.start_call_trace("c1", "b1")
    assert carrier == {} or set(carrier) >= {"traceparent"}


def test_a_taken_metrics_port_does_not_stop_the_process(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The port a stack picked can be taken before the replica binds it: the replica runs on, without metrics."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setattr(telemetry, "_configured", False)
        telemetry.configure("test", TelemetrySettings(exporter="none"), port)
    assert "no Prometheus metrics" in caplog.text and str(port) in caplog.text
