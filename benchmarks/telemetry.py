"""The OpenTelemetry SDK as an application wires it, exporting nowhere.

Built with the library's own helper (``setup_telemetry``) with
``set_global=False``: the providers are *injected* into the middlewares, so a
process can run pipelines with and without the SDK side by side (the global
providers can be set only once per process).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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


def sdk_on() -> tuple[Any, DiscardingSpanExporter, Any]:
    """``(telemetry, exporter, registry)``: tracer provider with a ``BatchSpanProcessor``
    over a discarding exporter, meter provider with the Prometheus reader over a
    registry of its own (nobody scrapes it during the run): the set-up behind the
    persistence-latency dashboards, as ``setup_telemetry`` builds it (no
    exemplars: the Prometheus exporter drops them)."""
    from prometheus_client import CollectorRegistry

    from cqrs_ddd_core.telemetry.setup import setup_telemetry

    exporter = DiscardingSpanExporter()
    registry = CollectorRegistry()
    telemetry = setup_telemetry(
        "cqrs-bench",
        traces=False,  # no OTLP exporter: ours below is the only one
        span_exporters=[exporter],
        prometheus=True,
        prometheus_registry=registry,
        set_global=False,
    )
    return telemetry, exporter, registry


def metric_names(registry: Any) -> list[str]:
    """The metric families a scrape of ``registry`` would show now (Prometheus names)."""
    return sorted({family.name for family in registry.collect() if family.samples})
