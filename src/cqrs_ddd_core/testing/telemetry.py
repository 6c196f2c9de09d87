"""Capture the spans, metrics and log events a dispatch produces (no pytest needed).

Each capture owns an SDK provider you inject into the middlewares (the global
providers can be set only once per process, so tests should not rely on them)::

    spans, metrics = SpanCapture(), MetricCapture()
    mediator = Mediator(
        registry,
        InMemoryUnitOfWork,
        middlewares=default_command_middlewares(
            uow_factory=InMemoryUnitOfWork,
            tracer_provider=spans.tracer_provider,
            meter_provider=metrics.meter_provider,
        ),
    )
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import structlog
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from structlog.contextvars import merge_contextvars
from structlog.testing import LogCapture

from cqrs_ddd_core.middleware.defaults import (
    default_command_middlewares,
    default_query_middlewares,
)
from cqrs_ddd_core.telemetry.logs import add_trace_context

if TYPE_CHECKING:
    from structlog.typing import EventDict, Processor

    from cqrs_ddd_core.persistence.ports import UnitOfWorkFactory
    from cqrs_ddd_core.pipeline.pipeline import Middleware

__all__ = [
    "MetricCapture",
    "SpanCapture",
    "TelemetryCapture",
    "capture_log_events",
]


class SpanCapture:
    """A tracer provider whose finished spans are kept in memory.

    Attributes:
        tracer_provider: Inject it (``tracer_provider=``) into the middlewares.
        exporter: The underlying ``InMemorySpanExporter``.
    """

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    @property
    def spans(self) -> tuple[ReadableSpan, ...]:
        """Finished spans, in the order they ended."""
        return tuple(self.exporter.get_finished_spans())

    @property
    def names(self) -> list[str]:
        """Names of the finished spans, in the order they ended."""
        return [span.name for span in self.spans]

    def named(self, name: str) -> ReadableSpan:
        """The one finished span called ``name``.

        Raises:
            LookupError: none, or more than one, is called that.
        """
        found = [span for span in self.spans if span.name == name]
        if len(found) != 1:
            raise LookupError(f"expected one span named {name!r}, found {len(found)}: {self.names}")
        return found[0]

    def children(self, parent: ReadableSpan) -> list[ReadableSpan]:
        """Finished spans whose parent is ``parent``, by start time."""
        parent_id = parent.context.span_id if parent.context is not None else None
        found = [s for s in self.spans if s.parent is not None and s.parent.span_id == parent_id]
        return sorted(found, key=lambda s: s.start_time or 0)

    def clear(self) -> None:
        self.exporter.clear()

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()


class MetricCapture:
    """A meter provider read on demand (cumulative values since it was made).

    Attributes:
        meter_provider: Inject it (``meter_provider=``) into the middlewares.
        reader: The underlying ``InMemoryMetricReader``.
    """

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def points(self, name: str) -> list[Any]:
        """The data points of metric ``name`` now (empty if nothing was recorded)."""
        data = self.reader.get_metrics_data()
        found: list[Any] = []
        if data is None:
            return found
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found

    def histogram(
        self, name: str, attributes: Mapping[str, Any] | None = None
    ) -> HistogramDataPoint:
        """The histogram point of ``name`` whose attributes include ``attributes``.

        Raises:
            LookupError: no point, or more than one, matches.
        """
        point = self._one(name, attributes)
        if not isinstance(point, HistogramDataPoint):
            raise LookupError(f"{name} is not a histogram")
        return point

    def value(self, name: str, attributes: Mapping[str, Any] | None = None) -> float:
        """The value of counter ``name`` for ``attributes``; 0 when it has no such point."""
        try:
            point = self._one(name, attributes)
        except LookupError:
            return 0
        if not isinstance(point, NumberDataPoint):
            raise LookupError(f"{name} is not a counter")
        return point.value

    def _one(self, name: str, attributes: Mapping[str, Any] | None) -> Any:
        wanted = dict(attributes or {})
        found = [
            point
            for point in self.points(name)
            if all(point.attributes.get(key) == value for key, value in wanted.items())
        ]
        if len(found) != 1:
            raise LookupError(f"expected one {name} point with {wanted}, found {len(found)}")
        return found[0]

    def shutdown(self) -> None:
        self.meter_provider.shutdown()


@contextmanager
def capture_log_events(
    processors: Sequence[Processor] = (merge_contextvars, add_trace_context),
) -> Iterator[list[EventDict]]:
    """Collect structlog events as dicts while the block runs.

    Like ``structlog.testing.capture_logs``, but by default the contextvars
    (correlation id, message type and id) and the trace ids are merged in,
    as an application's configuration would. Log levels filtered out by the
    configured wrapper class are not captured. Not thread-safe.
    """
    capture = LogCapture()
    configured: list[Processor] = structlog.get_config()["processors"]
    saved = list(configured)
    try:
        # Keep the list object: loggers cached on first use hold a reference to it.
        configured[:] = [*processors, capture]
        structlog.configure(processors=configured)
        yield capture.entries
    finally:
        configured[:] = saved
        structlog.configure(processors=configured)


class TelemetryCapture:
    """Spans, metrics and log events at once, and default pipelines wired to them."""

    def __init__(self) -> None:
        self.spans = SpanCapture()
        self.metrics = MetricCapture()
        self.logs: list[EventDict] = []

    def command_middlewares(self, *, uow_factory: UnitOfWorkFactory | None) -> list[Middleware]:
        """The default command pipeline, reporting to this capture."""
        return default_command_middlewares(
            uow_factory=uow_factory,
            tracer_provider=self.spans.tracer_provider,
            meter_provider=self.metrics.meter_provider,
        )

    def query_middlewares(self) -> list[Middleware]:
        """The default query pipeline, reporting to this capture."""
        return default_query_middlewares(
            tracer_provider=self.spans.tracer_provider,
            meter_provider=self.metrics.meter_provider,
        )

    @contextmanager
    def capturing_logs(self) -> Iterator[list[EventDict]]:
        """Capture log events into :attr:`logs` while the block runs."""
        with capture_log_events() as entries:
            self.logs = entries
            yield entries

    def shutdown(self) -> None:
        self.spans.shutdown()
        self.metrics.shutdown()
