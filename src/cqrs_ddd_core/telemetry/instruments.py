"""The metric instruments of the metrics middleware, created once per meter."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cqrs_ddd_core.telemetry.names import (
    DURATION_BUCKETS,
    METRIC_COMMAND_DURATION,
    METRIC_EVENTS_STORED,
    METRIC_OUTBOX_ENQUEUED,
    METRIC_PERSISTENCE_DURATION,
    METRIC_QUERY_DURATION,
)

if TYPE_CHECKING:
    from opentelemetry.metrics import Counter, Histogram, Meter

__all__ = ["Instruments"]


class Instruments:
    """The five instruments named in ``docs/observability.md``.

    Histograms carry explicit bucket boundaries in seconds through the API's
    ``explicit_bucket_boundaries_advisory`` (the SDK honours it unless a View
    says otherwise), so no View is needed for sensible buckets.
    """

    __slots__ = (
        "command_duration",
        "events_stored",
        "outbox_enqueued",
        "persistence_duration",
        "query_duration",
    )

    def __init__(self, meter: Meter) -> None:
        self.command_duration: Histogram = meter.create_histogram(
            METRIC_COMMAND_DURATION,
            unit="s",
            description="Time to dispatch a command through its pipeline, commit included.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.query_duration: Histogram = meter.create_histogram(
            METRIC_QUERY_DURATION,
            unit="s",
            description="Time to dispatch a query through its pipeline.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.persistence_duration: Histogram = meter.create_histogram(
            METRIC_PERSISTENCE_DURATION,
            unit="s",
            description="Time a command's unit of work spent writing and committing.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.events_stored: Counter = meter.create_counter(
            METRIC_EVENTS_STORED,
            unit="{event}",
            description="Events appended to an event store by committed units of work.",
        )
        self.outbox_enqueued: Counter = meter.create_counter(
            METRIC_OUTBOX_ENQUEUED,
            unit="{message}",
            description="Messages written to an outbox by committed units of work.",
        )
