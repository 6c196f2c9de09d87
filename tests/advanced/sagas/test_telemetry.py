"""A span per saga step, linked to the event that triggered it; the saga metrics."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from cqrs_ddd_advanced_core.sagas import telemetry as t
from cqrs_ddd_core.testing.telemetry import MetricCapture, SpanCapture
from tests.support.backends import memory_backend
from tests.support.orders import OrderPlaced, order_app, sync_saga


def traced_event(spans: SpanCapture, order_id: str) -> tuple[OrderPlaced, trace.SpanContext]:
    tracer = spans.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("place order") as span:
        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier)
    return OrderPlaced(order_id=order_id, metadata=carrier), span.get_span_context()


async def test_each_step_has_a_span_linked_to_the_triggering_event(
    span_capture: SpanCapture, metric_capture: MetricCapture
) -> None:
    app = order_app(
        memory_backend(),
        sync_saga(),
        tracer_provider=span_capture.tracer_provider,
        meter_provider=metric_capture.meter_provider,
    )
    event, origin = traced_event(span_capture, "o1")

    await app.manager.handle(event)

    steps = [s for s in span_capture.spans if s.name == t.SPAN_SAGA_STEP]
    assert [s.attributes[t.ATTR_SAGA_STEP] for s in steps] == ["start", "reserve", "pay", "ship"]
    for span in steps:
        assert span.attributes[t.ATTR_SAGA_ID] == "order:o1"
        assert span.attributes[t.ATTR_SAGA_TRIGGER_EVENT_ID] == event.event_id
        assert [link.context.span_id for link in span.links] == [origin.span_id]
        assert span.kind is trace.SpanKind.INTERNAL


async def test_started_completed_and_compensated_are_counted_when_they_commit(
    metric_capture: MetricCapture,
) -> None:
    app = order_app(memory_backend(), sync_saga(), meter_provider=metric_capture.meter_provider)
    app.declined.add("o2")

    await app.manager.handle(OrderPlaced(order_id="o1"))
    await app.manager.handle(OrderPlaced(order_id="o2"))
    await app.manager.handle(OrderPlaced(order_id="o2"))  # a redelivery counts nothing

    by_type = {t.ATTR_SAGA_TYPE: "order"}
    assert metric_capture.value(t.METRIC_SAGAS_STARTED, by_type) == 2
    assert metric_capture.value(t.METRIC_SAGAS_COMPLETED, by_type) == 1
    assert metric_capture.value(t.METRIC_SAGAS_COMPENSATED, by_type) == 1
    assert metric_capture.value(t.METRIC_SAGAS_FAILED, by_type) == 0
    durations = metric_capture.histogram(
        t.METRIC_SAGA_STEP_DURATION, {t.ATTR_SAGA_TYPE: "order", t.ATTR_SAGA_STEP: "reserve"}
    )
    assert durations.count == 3  # reserved twice, released once


async def test_open_sagas_by_type_are_reported_as_last_counted(
    metric_capture: MetricCapture,
) -> None:
    app = order_app(memory_backend(), sync_saga(), meter_provider=metric_capture.meter_provider)
    from cqrs_ddd_advanced_core.sagas import StartSaga

    await app.mediator.send(StartSaga(saga_type="order", event=OrderPlaced(order_id="o1")))
    assert await app.manager.count_open() == {"order": 1}
    assert metric_capture.value(t.METRIC_SAGAS_OPEN, {t.ATTR_SAGA_TYPE: "order"}) == 1

    await app.manager.run("order:o1")
    assert await app.manager.count_open() == {"order": 0}
    assert metric_capture.value(t.METRIC_SAGAS_OPEN, {t.ATTR_SAGA_TYPE: "order"}) == 0
