"""The OpenTelemetry SDK as an application wires it, exporting nowhere.

Built with the library's own helper (``setup_telemetry``) with
``set_global=False``: the providers are *injected* into the middlewares, so a
process can run pipelines with and without the SDK side by side (the global
providers can be set only once per process).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

__all__ = ["DiscardingSpanExporter", "sdk_on"]


class DiscardingSpanExporter(SpanExporter):
    """Receives batches from the ``BatchSpanProcessor`` and drops them (counting spans)."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def sdk_on() -> tuple[Any, DiscardingSpanExporter, InMemoryMetricReader]:
    """``(telemetry, exporter, reader)``: tracer provider with a ``BatchSpanProcessor``
    over a discarding exporter, meter provider with an in-memory (pull) reader,
    as Prometheus would use it."""
    from cqrs_ddd_core.telemetry.setup import setup_telemetry

    exporter = DiscardingSpanExporter()
    reader = InMemoryMetricReader()
    telemetry = setup_telemetry(
        "cqrs-bench",
        traces=False,  # no OTLP exporter: ours below is the only one
        span_exporters=[exporter],
        metric_readers=[reader],
        set_global=False,
    )
    return telemetry, exporter, reader
