"""The test kit applications use: captures, their lookups, and the pytest fixtures."""

from __future__ import annotations

import pytest

from cqrs_ddd_core.adapters.memory import InMemoryUnitOfWork
from cqrs_ddd_core.cqrs import Mediator
from cqrs_ddd_core.testing import MetricCapture, SpanCapture, TelemetryCapture
from tests.observability.app import GetOrder, PlaceOrder, Shop


async def test_the_telemetry_capture_fixture_sees_spans_metrics_and_logs_of_default_pipelines(
    shop: Shop, telemetry_capture: TelemetryCapture
) -> None:
    mediator = Mediator(
        shop.registry,
        InMemoryUnitOfWork,
        middlewares=telemetry_capture.command_middlewares(uow_factory=InMemoryUnitOfWork),
        query_middlewares=telemetry_capture.query_middlewares(),
    )

    await mediator.send(PlaceOrder(order_id="o-1", amount=3))
    await mediator.query(GetOrder(order_id="o-1"))

    assert telemetry_capture.spans.names == [
        "INSERT events",
        "INSERT outbox",
        "COMMIT",
        "command PlaceOrder",
        "query GetOrder",
    ]
    assert telemetry_capture.metrics.histogram("cqrs.command.duration").count == 1
    assert telemetry_capture.metrics.histogram("cqrs.query.duration").count == 1
    assert [e["event"] for e in telemetry_capture.logs] == [
        "command_started",
        "command_succeeded",
        "query_started",
        "query_succeeded",
    ]
    command_span = telemetry_capture.spans.named("command PlaceOrder").context
    assert command_span is not None
    assert telemetry_capture.logs[0]["span_id"] == f"{command_span.span_id:016x}"


def test_lookups_fail_loudly_when_nothing_or_too_much_matches() -> None:
    spans, metrics = SpanCapture(), MetricCapture()

    with pytest.raises(LookupError, match="expected one span named 'x', found 0"):
        spans.named("x")
    with pytest.raises(LookupError, match=r"expected one cqrs\.command\.duration point"):
        metrics.histogram("cqrs.command.duration")
    assert metrics.value("cqrs.events.stored") == 0
    assert metrics.points("cqrs.events.stored") == []
    spans.clear()
    spans.shutdown()
    metrics.shutdown()
