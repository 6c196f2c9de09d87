"""The metric instruments of the metrics middleware, created once per meter.

The two counters (``cqrs.events.stored``, ``cqrs.outbox.enqueued``) are not
here: the library counts them itself and reports them through observable
counters, one registration per meter provider
(:mod:`cqrs_ddd_core.telemetry.commit_counts`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cqrs_ddd_core.telemetry.names import (
    DURATION_BUCKETS,
    METRIC_COMMAND_DURATION,
    METRIC_PERSISTENCE_DURATION,
    METRIC_QUERY_DURATION,
)

if TYPE_CHECKING:
    from opentelemetry.metrics import Histogram, Meter

__all__ = ["Instruments"]


class Instruments:
    """The three duration histograms named in ``docs/observability.md``.

    Histograms carry explicit bucket boundaries in seconds through the API's
    ``explicit_bucket_boundaries_advisory`` (the SDK honours it unless a View
    says otherwise), so no View is needed for sensible buckets.
    """

    __slots__ = (
        "command_duration",
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
