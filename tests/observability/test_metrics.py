"""MetricsMiddleware: durations per message type and outcome, persistence latency, events."""

from __future__ import annotations

from typing import Any

import pytest

from cqrs_ddd_core.exceptions import ConcurrencyError, MessageValidationError
from cqrs_ddd_core.middleware import MetricsMiddleware
from cqrs_ddd_core.telemetry import DURATION_BUCKETS
from cqrs_ddd_core.testing import MetricCapture, SpanCapture
from tests.observability.app import (
    Boom,
    Explode,
    FixedTimingUnitOfWork,
    GetOrder,
    PlaceOrder,
    Shop,
    build_mediator,
)

SUCCESS = {"cqrs.message.type": "PlaceOrder", "cqrs.outcome": "success"}


async def test_command_duration_is_recorded_per_type_and_outcome_in_seconds_buckets(
    shop: Shop, metric_capture: MetricCapture
) -> None:
    mediator = build_mediator(shop, meter_provider=metric_capture.meter_provider)

    await mediator.send(PlaceOrder(order_id="o-1", amount=3))
    await mediator.send(PlaceOrder(order_id="o-2", amount=3))

    point = metric_capture.histogram("cqrs.command.duration", SUCCESS)
    assert dict(point.attributes or {}) == SUCCESS  # no error.type on success
    assert point.count == 2
    assert tuple(point.explicit_bounds) == DURATION_BUCKETS
    assert DURATION_BUCKETS[0] == 0.001
    assert DURATION_BUCKETS[-1] == 10.0
    assert 0 < point.sum < 10


async def test_each_failure_path_records_error_or_refused_with_its_qualified_type(
    shop: Shop, metric_capture: MetricCapture
) -> None:
    mediator = build_mediator(shop, meter_provider=metric_capture.meter_provider)
    await mediator.send(PlaceOrder(order_id="o-1", amount=3))

    with pytest.raises(Boom):
        await mediator.send(Explode())
    with pytest.raises(MessageValidationError):
        await mediator.send(PlaceOrder.model_construct(order_id="o-2", amount=0, message_id="m"))
    with pytest.raises(ConcurrencyError):
        await mediator.send(PlaceOrder(order_id="o-1", amount=3))

    expected = [
        {
            "cqrs.message.type": "Explode",
            "cqrs.outcome": "error",
            "error.type": "tests.observability.app.Boom",
        },
        {
            "cqrs.message.type": "PlaceOrder",
            "cqrs.outcome": "refused",
            "cqrs.refusal.type": "cqrs_ddd_core.exceptions.MessageValidationError",
        },
        {
            "cqrs.message.type": "PlaceOrder",
            "cqrs.outcome": "refused",
            "cqrs.refusal.type": "cqrs_ddd_core.exceptions.ConcurrencyError",
        },
    ]
    for attributes in expected:
        point = metric_capture.histogram("cqrs.command.duration", attributes)
        assert dict(point.attributes or {}) == attributes
        assert point.count == 1
    # A failed commit persisted nothing: only the first command counts.
    assert metric_capture.value("cqrs.events.stored", {"cqrs.aggregate.type": "Order"}) == 1
    assert metric_capture.histogram("cqrs.persistence.duration").count == 1


async def test_query_duration_has_the_same_shape(shop: Shop, metric_capture: MetricCapture) -> None:
    mediator = build_mediator(shop, meter_provider=metric_capture.meter_provider)

    await mediator.query(GetOrder(order_id="o-1"))

    point = metric_capture.histogram("cqrs.query.duration")
    assert dict(point.attributes or {}) == {
        "cqrs.message.type": "GetOrder",
        "cqrs.outcome": "success",
    }
    assert tuple(point.explicit_bounds) == DURATION_BUCKETS
    assert metric_capture.points("cqrs.persistence.duration") == []


async def test_a_3_ms_persistence_lands_in_the_2_5_to_5_ms_bucket(
    shop: Shop, metric_capture: MetricCapture
) -> None:
    mediator = build_mediator(
        shop, meter_provider=metric_capture.meter_provider, uow_factory=FixedTimingUnitOfWork
    )

    await mediator.send(PlaceOrder(order_id="o-1", amount=3))

    point = metric_capture.histogram("cqrs.persistence.duration")
    assert dict(point.attributes or {}) == {"cqrs.aggregate.type": "Order"}
    assert point.sum == pytest.approx(0.003)
    bucket = list(point.bucket_counts).index(1)
    assert (point.explicit_bounds[bucket - 1], point.explicit_bounds[bucket]) == (0.0025, 0.005)


async def test_persistence_is_recorded_once_per_aggregate_type_of_the_unit_of_work(
    shop: Shop, metric_capture: MetricCapture
) -> None:
    mediator = build_mediator(
        shop, meter_provider=metric_capture.meter_provider, uow_factory=FixedTimingUnitOfWork
    )

    await mediator.send(PlaceOrder(order_id="o-1", amount=3, sku="sku-1"))

    for aggregate_type in ("Order", "Stock"):
        attributes = {"cqrs.aggregate.type": aggregate_type}
        assert metric_capture.histogram("cqrs.persistence.duration", attributes).count == 1
        assert metric_capture.value("cqrs.events.stored", attributes) == 1
    assert len(metric_capture.points("cqrs.persistence.duration")) == 2
    # The nested command joined the root's unit of work: it records no persistence itself.
    assert metric_capture.histogram("cqrs.command.duration", SUCCESS).count == 1
    nested = {"cqrs.message.type": "ReserveStock", "cqrs.outcome": "success"}
    assert metric_capture.histogram("cqrs.command.duration", nested).count == 1


async def test_a_commit_without_events_is_recorded_under_aggregate_type_none(
    metric_capture: MetricCapture,
) -> None:
    shop = Shop()

    async def no_events(command: PlaceOrder) -> str:
        return command.order_id

    shop.registry._commands[PlaceOrder] = no_events
    mediator = build_mediator(
        shop, meter_provider=metric_capture.meter_provider, uow_factory=FixedTimingUnitOfWork
    )

    await mediator.send(PlaceOrder(order_id="o-1", amount=3))

    point = metric_capture.histogram("cqrs.persistence.duration")
    assert dict(point.attributes or {}) == {"cqrs.aggregate.type": "none"}
    assert metric_capture.points("cqrs.events.stored") == []


async def test_attribute_sets_are_computed_once_per_type_and_outcome() -> None:
    capture = MetricCapture()
    middleware = MetricsMiddleware(meter_provider=capture.meter_provider)

    first = middleware._attributes_for("PlaceOrder", None, False)
    assert middleware._attributes_for("PlaceOrder", None, False) is first
    assert middleware._attributes_for("PlaceOrder", "X", False) is middleware._attributes_for(
        "PlaceOrder", "X", False
    )
    refused = middleware._attributes_for("PlaceOrder", "X", True)
    assert refused == {
        "cqrs.message.type": "PlaceOrder",
        "cqrs.outcome": "refused",
        "cqrs.refusal.type": "X",
    }
    assert middleware.name == "metrics"
    assert "unit_of_work" in middleware.placement.outside
    assert "MetricsMiddleware(" in repr(middleware)
    capture.shutdown()


async def test_each_measurement_carries_the_span_of_its_own_dispatch_as_exemplar(
    shop: Shop, span_capture: SpanCapture, metric_capture: MetricCapture
) -> None:
    # The middleware reads the current context once per dispatch and hands it to
    # every record (the SDK's exemplar filter reads it): it must be the context
    # of that dispatch, not one kept from an earlier dispatch or from the parent.
    mediator = build_mediator(
        shop,
        tracer_provider=span_capture.tracer_provider,
        meter_provider=metric_capture.meter_provider,
        uow_factory=FixedTimingUnitOfWork,
    )
    await mediator.send(PlaceOrder(order_id="o-1", amount=3))
    (first,) = [s.context for s in span_capture.spans if s.name == "command PlaceOrder"]
    span_capture.clear()
    await mediator.send(PlaceOrder(order_id="o-2", amount=3, sku="s-1"))  # sends ReserveStock

    latest = span_capture.named("command PlaceOrder").context
    nested = span_capture.named("command ReserveStock").context
    assert first is not None
    assert latest is not None
    assert nested is not None

    # One collection: the SDK hands each exemplar out once (its reservoirs are
    # reset when collected).
    data = metric_capture.reader.get_metrics_data()
    assert data is not None
    exemplars: dict[tuple[str, frozenset[Any]], set[int]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    key = (metric.name, frozenset((point.attributes or {}).items()))
                    exemplars[key] = {e.span_id for e in point.exemplars}

    def exemplar_spans(name: str, attributes: dict[str, str]) -> set[int]:
        return exemplars[(name, frozenset(attributes.items()))]

    # One exemplar per bucket, the latest measurement's: the two PlaceOrders'
    # own spans (one bucket or two), never the nested command's.
    placed = exemplar_spans("cqrs.command.duration", SUCCESS)
    assert latest.span_id in placed
    assert placed <= {first.span_id, latest.span_id}
    reserve = {"cqrs.message.type": "ReserveStock", "cqrs.outcome": "success"}
    assert exemplar_spans("cqrs.command.duration", reserve) == {nested.span_id}
    # The persistence series (a fixed 3 ms: one bucket) are recorded by the
    # dispatch that owns the unit of work, the latest PlaceOrder.
    order = {"cqrs.aggregate.type": "Order"}
    assert exemplar_spans("cqrs.persistence.duration", order) == {latest.span_id}
