"""Projection runners report a span per batch, events applied, lag and batch duration."""

from __future__ import annotations

from datetime import timedelta

import pytest

from cqrs_ddd_advanced_core.domain import ProjectionError
from cqrs_ddd_advanced_core.projections import Projection, ProjectionRunner
from cqrs_ddd_core.adapters.memory import (
    InMemoryEventStore,
    InMemoryProjectionStore,
    InMemoryProjectionTransaction,
    InMemoryUnitOfWork,
)
from cqrs_ddd_core.domain.messages import utc_now
from cqrs_ddd_core.persistence import StoredEvent
from cqrs_ddd_core.telemetry import names
from cqrs_ddd_core.testing import MetricCapture, SpanCapture
from tests.support.accounts import Deposited
from tests.support.projections import memory_projection

NAME = {names.ATTR_PROJECTION_NAME: "account_totals"}


async def deposits(store: InMemoryEventStore, count: int, *, age: timedelta | None = None) -> None:
    uow = InMemoryUnitOfWork()
    occurred = utc_now() - (age or timedelta())
    events = [Deposited(amount=1, occurred_at=occurred) for _ in range(count)]
    await store.append("Account", "a", events, expected_version=0, uow=uow)
    await uow.commit()


def runner(
    events: InMemoryEventStore,
    spans: SpanCapture,
    metrics: MetricCapture,
    projection: Projection[InMemoryProjectionTransaction] | None = None,
    batch_size: int = 2,
) -> ProjectionRunner[InMemoryProjectionTransaction]:
    return ProjectionRunner(
        projection or memory_projection(),
        events=events,
        store=InMemoryProjectionStore(),
        batch_size=batch_size,
        tracer_provider=spans.tracer_provider,
        meter_provider=metrics.meter_provider,
    )


async def test_each_batch_has_a_span_with_the_projection_its_events_and_position(
    span_capture: SpanCapture, metric_capture: MetricCapture
) -> None:
    events = InMemoryEventStore()
    await deposits(events, 3)

    await runner(events, span_capture, metric_capture).catch_up()

    spans = [s for s in span_capture.spans if s.name == "projection account_totals"]
    assert [dict(s.attributes or {}) for s in spans] == [
        {**NAME, names.ATTR_PROJECTION_EVENTS: 2, names.ATTR_PROJECTION_POSITION: 2},
        {**NAME, names.ATTR_PROJECTION_EVENTS: 1, names.ATTR_PROJECTION_POSITION: 3},
    ]


async def test_events_applied_and_batch_durations_are_counted_per_projection(
    span_capture: SpanCapture, metric_capture: MetricCapture
) -> None:
    events = InMemoryEventStore()
    await deposits(events, 5)

    await runner(events, span_capture, metric_capture).catch_up()

    assert metric_capture.value(names.METRIC_PROJECTION_EVENTS_APPLIED, NAME) == 5
    histogram = metric_capture.histogram(names.METRIC_PROJECTION_BATCH_DURATION, NAME)
    assert histogram.count == 3
    assert tuple(histogram.explicit_bounds) == names.DURATION_BUCKETS


async def test_lag_is_reported_in_positions_and_seconds_and_is_zero_once_caught_up(
    span_capture: SpanCapture, metric_capture: MetricCapture
) -> None:
    events = InMemoryEventStore()
    await deposits(events, 5, age=timedelta(seconds=90))
    run = runner(events, span_capture, metric_capture)

    await run.run_batch()
    assert metric_capture.points(names.METRIC_PROJECTION_LAG_POSITIONS)[0].value == 3
    assert 89 < metric_capture.points(names.METRIC_PROJECTION_LAG)[0].value < 600

    await run.catch_up()
    assert metric_capture.points(names.METRIC_PROJECTION_LAG_POSITIONS)[0].value == 0
    assert metric_capture.points(names.METRIC_PROJECTION_LAG)[0].value == 0


async def test_a_failing_batch_span_has_status_error_and_the_error_type(
    span_capture: SpanCapture, metric_capture: MetricCapture
) -> None:
    events = InMemoryEventStore()
    await deposits(events, 1)
    broken = Projection[InMemoryProjectionTransaction]("account_totals")

    @broken.on("Deposited")
    async def boom(event: StoredEvent, tx: InMemoryProjectionTransaction) -> None:
        raise ValueError("no")

    with pytest.raises(ProjectionError):
        await runner(events, span_capture, metric_capture, broken).run_batch()

    span = span_capture.named("projection account_totals")
    assert span.status.status_code.name == "ERROR"
    assert (span.attributes or {})[names.ATTR_ERROR_TYPE] == (
        "cqrs_ddd_advanced_core.domain.exceptions.ProjectionError"
    )
    assert metric_capture.value(names.METRIC_PROJECTION_EVENTS_APPLIED, NAME) == 0
