"""The collector gate: an absent OTLP collector costs a bounded probe and one warning line."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator

import pytest
import structlog
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult

from cqrs_ddd_core.telemetry import otlp_gate
from cqrs_ddd_core.telemetry.otlp_gate import CollectorGate, gate_for, gated, otlp_endpoint
from tests.observability.test_otlp_export import OTEL_VARIABLES


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port: int = unused.getsockname()[1]
    return port


@pytest.fixture
def listening() -> Iterator[int]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


def test_the_endpoint_is_resolved_as_the_exporters_resolve_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert otlp_endpoint("traces", "http/protobuf", None) == "http://localhost:4318"
    assert otlp_endpoint("traces", "grpc", None) == "http://localhost:4317"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    assert otlp_endpoint("metrics", "http/protobuf", None) == "http://collector:4318"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:9999/v1/traces")
    assert otlp_endpoint("traces", "http/protobuf", None) == "http://traces:9999/v1/traces"
    assert otlp_endpoint("traces", "http/protobuf", "http://given:1") == "http://given:1"


def test_one_gate_per_collector_address() -> None:
    first = gate_for("http://127.0.0.1:5555/v1/traces")
    assert first is not None
    assert gate_for("http://127.0.0.1:5555/v1/metrics") is first
    assert gate_for("127.0.0.1:5555") is first  # a gRPC endpoint without a scheme
    assert gate_for("http://127.0.0.1:5556") is not first
    assert gate_for("not a url:port") is None


def test_an_absent_collector_is_probed_once_and_warned_about_once(closed_port: int) -> None:
    gate = CollectorGate(f"http://127.0.0.1:{closed_port}", "127.0.0.1", closed_port)
    with structlog.testing.capture_logs() as logs:
        started = time.perf_counter()
        assert gate.open() is False
        assert gate.open() is False  # within RETRY_S: no second probe
        gate.failed()
        elapsed = time.perf_counter() - started
    assert elapsed < 2 * otlp_gate.PROBE_TIMEOUT_S + 0.5
    warnings = [e for e in logs if e["event"] == "telemetry_collector_unreachable"]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"
    assert warnings[0]["endpoint"] == f"http://127.0.0.1:{closed_port}"
    record = logging.LogRecord("x", logging.ERROR, "", 0, "Failed to export", None, None)
    assert gate.quiet(record) is False  # the exporter's own errors are silenced


def test_a_collector_that_answers_is_exported_to_and_logged_when_back(
    closed_port: int, listening: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = CollectorGate("http://127.0.0.1", "127.0.0.1", listening)
    assert gate.open() is True
    assert gate.up is True
    record = logging.LogRecord("x", logging.ERROR, "", 0, "Failed to export", None, None)
    assert gate.quiet(record) is True
    # Away, then back: after RETRY_S the next export probes again and goes through.
    away = CollectorGate("http://127.0.0.1", "127.0.0.1", closed_port)
    assert away.open() is False
    away._address = ("127.0.0.1", listening)
    monkeypatch.setattr(otlp_gate, "RETRY_S", 0.0)
    with structlog.testing.capture_logs() as logs:
        assert away.open() is True
    assert [e["event"] for e in logs] == ["telemetry_collector_reachable"]


def test_a_gated_exporter_drops_spans_at_once_without_the_exporter_s_retries(
    closed_port: int,
) -> None:
    endpoint = f"http://127.0.0.1:{closed_port}/v1/traces"
    gate = gate_for(endpoint)
    assert gate is not None
    exporter = gated(OTLPSpanExporter, SpanExportResult.FAILURE, gate)(endpoint=endpoint)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    started = time.perf_counter()
    for _ in range(20):
        tracer.start_span("s").end()
    provider.shutdown()
    # Ungated, the first export alone retries for about 10 s (the exporter's timeout).
    assert time.perf_counter() - started < 2.0
    assert gate.up is False
