"""The metric instruments of projection runners, created once per runner."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cqrs_ddd_core.telemetry.names import (
    DURATION_BUCKETS,
    METRIC_PROJECTION_BATCH_DURATION,
    METRIC_PROJECTION_EVENTS_APPLIED,
    METRIC_PROJECTION_LAG,
    METRIC_PROJECTION_LAG_POSITIONS,
)

if TYPE_CHECKING:
    from opentelemetry.metrics import Counter, Histogram, Meter

__all__ = ["ProjectionInstruments"]


class ProjectionInstruments:
    """Events applied (counter), lag in positions and seconds (gauges), batch duration."""

    __slots__ = ("batch_duration", "events_applied", "lag_positions", "lag_seconds")

    def __init__(self, meter: Meter) -> None:
        self.events_applied: Counter = meter.create_counter(
            METRIC_PROJECTION_EVENTS_APPLIED,
            unit="{event}",
            description="Events applied by a projection (their batch committed).",
        )
        self.lag_positions = meter.create_gauge(
            METRIC_PROJECTION_LAG_POSITIONS,
            unit="{position}",
            description="The event store's head position minus the projection's checkpoint.",
        )
        self.lag_seconds = meter.create_gauge(
            METRIC_PROJECTION_LAG,
            unit="s",
            description="Age of the last applied event while the projection is behind, else 0.",
        )
        self.batch_duration: Histogram = meter.create_histogram(
            METRIC_PROJECTION_BATCH_DURATION,
            unit="s",
            description="Time to read, apply and commit one projection batch.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
