"""The consumer pipeline on the in-memory inbox: order, inbox, outcomes, spans, metrics."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest
import structlog
from opentelemetry import trace
from opentelemetry.trace import SpanContext

from cqrs_ddd_advanced_core.messaging import (
    ConsumeContext,
    IncomingMessage,
    MessageConsumer,
    Outcome,
)
from cqrs_ddd_advanced_core.messaging.consumer import ConsumeNext
from cqrs_ddd_core.adapters.memory import InMemoryInboxStore
from cqrs_ddd_core.context import ambient_correlation_id
from cqrs_ddd_core.exceptions import ConfigurationError
from cqrs_ddd_core.persistence import InboxTransaction
from cqrs_ddd_core.testing import MetricCapture, SpanCapture

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def message(message_id: str = "m1", message_type: str = "OrderPlaced") -> IncomingMessage:
    return IncomingMessage(
        message_id=message_id,
        message_type=message_type,
        payload={"total": 3},
        aggregate_type="Order",
        aggregate_id="o-1",
        aggregate_version=1,
        correlation_id="flow-1",
        trace_context={"traceparent": TRACEPARENT},
        destination="billing.0",
    )


class Effects:
    def __init__(self) -> None:
        self.applied: list[str] = []
        self.correlations: list[str | None] = []
        self.fail = False

    async def handle(self, incoming: IncomingMessage, tx: InboxTransaction) -> None:
        self.correlations.append(ambient_correlation_id())
        if self.fail:
            raise RuntimeError("handler failed")
        tx.after_commit(lambda: self.applied.append(incoming.message_id))


def consumer(**options: Any) -> tuple[MessageConsumer, Effects, InMemoryInboxStore]:
    inbox, effects = InMemoryInboxStore(), Effects()
    built = MessageConsumer("billing", inbox, **options)
    built.subscribe("OrderPlaced", effects.handle)
    return built, effects, inbox


async def test_a_delivery_is_handled_once_and_its_redelivery_is_a_duplicate() -> None:
    built, effects, inbox = consumer()
    assert await built.process(message()) is Outcome.HANDLED
    assert await built.process(message()) is Outcome.DUPLICATE
    assert effects.applied == ["m1"]
    assert await inbox.has_handled("billing", "m1")


async def test_a_type_without_handler_is_ignored_and_not_recorded() -> None:
    built, _effects, inbox = consumer()
    assert await built.process(message(message_type="Other")) is Outcome.IGNORED
    assert not await inbox.has_handled("billing", "m1")


async def test_a_failing_handler_records_nothing_so_the_retry_applies_it() -> None:
    built, effects, inbox = consumer()
    effects.fail = True
    with pytest.raises(RuntimeError):
        await built.process(message())
    assert not await inbox.has_handled("billing", "m1")
    effects.fail = False
    assert await built.process(message()) is Outcome.HANDLED
    assert effects.applied == ["m1"]


async def test_the_handler_runs_in_the_messages_correlation() -> None:
    built, effects, _ = consumer()
    await built.process(message())
    assert effects.correlations == ["flow-1"]


async def test_extra_middlewares_run_between_metrics_and_the_inbox_in_listed_order() -> None:
    calls: list[str] = []

    def step(name: str) -> Any:
        async def middleware(
            incoming: IncomingMessage, context: ConsumeContext, call_next: ConsumeNext
        ) -> Outcome:
            calls.append(f"{name}:{context.transaction is None}")
            return await call_next(incoming, context)

        middleware.__name__ = name
        return middleware

    built, _, _ = consumer(middlewares=[step("first"), step("second")])
    assert (
        built.describe()
        == "trace -> logging -> metrics -> first -> second -> unit_of_work -> handler"
    )
    await built.process(message())
    assert calls == ["first:True", "second:True"]  # outside the transaction


async def test_subscribing_after_the_first_delivery_is_refused() -> None:
    built, effects, _ = consumer()
    await built.process(message())
    with pytest.raises(ConfigurationError, match="subscribe before"):
        built.subscribe("OrderShipped", effects.handle)


def test_a_consumer_needs_a_name() -> None:
    with pytest.raises(ConfigurationError):
        MessageConsumer("", InMemoryInboxStore())


async def test_the_consumer_span_is_a_child_of_the_producer_context() -> None:
    spans = SpanCapture()
    built, effects, _ = consumer(tracer_provider=spans.tracer_provider)
    await built.process(message())
    effects.fail = True
    with pytest.raises(RuntimeError):
        await built.process(message("m2"))
    ok, failed = spans.spans
    assert ok.name == "process billing.0"
    assert ok.kind is trace.SpanKind.CONSUMER
    assert ok.context.trace_id == int("0af7651916cd43dd8448eb211c80319c", 16)
    assert ok.parent is not None
    assert ok.parent.span_id == int("b7ad6b7169203331", 16)
    assert ok.attributes["messaging.operation.type"] == "process"
    assert ok.attributes["cqrs.outcome"] == "handled"
    assert failed.status.status_code is trace.StatusCode.ERROR
    assert failed.attributes["error.type"] == "RuntimeError"


async def test_metrics_count_outcomes_and_time_processing_in_seconds() -> None:
    metrics = MetricCapture()
    built, _effects, _ = consumer(meter_provider=metrics.meter_provider)
    await built.process(message())
    await built.process(message())
    base = {"messaging.consumer.group.name": "billing", "cqrs.message.type": "OrderPlaced"}
    assert (
        metrics.value("messaging.client.consumed.messages", {**base, "cqrs.outcome": "handled"})
        == 1
    )
    assert (
        metrics.value("messaging.client.consumed.messages", {**base, "cqrs.outcome": "duplicate"})
        == 1
    )
    (point,) = metrics.points("messaging.process.duration")
    assert point.count == 2
    assert point.explicit_bounds[0] == 0.001


async def test_without_a_tracing_sdk_the_handler_runs_in_the_producers_context() -> None:
    seen: list[SpanContext] = []

    async def handler(incoming: IncomingMessage, tx: InboxTransaction) -> None:
        seen.append(trace.get_current_span().get_span_context())

    built = MessageConsumer(
        "billing", InMemoryInboxStore(), tracer_provider=trace.NoOpTracerProvider()
    )
    built.subscribe("OrderPlaced", handler)
    assert await built.process(message()) is Outcome.HANDLED
    assert await built.process(dataclasses.replace(message("m2"), trace_context={})) is (
        Outcome.HANDLED
    )
    producer, without = seen
    assert producer.trace_id == int("0af7651916cd43dd8448eb211c80319c", 16)
    assert producer.span_id == int("b7ad6b7169203331", 16)  # what it sends carries it on
    assert not without.is_valid
    assert not trace.get_current_span().get_span_context().is_valid  # detached afterwards


@pytest.fixture
def debug_logs() -> Any:
    """structlog emitting DEBUG while the test runs; its configuration restored after."""
    previous = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        yield
    finally:
        structlog.configure(**previous)


@pytest.mark.usefixtures("debug_logs")
async def test_deliveries_are_logged_with_their_fields_and_successes_at_debug_only() -> None:
    built, effects, _ = consumer()
    with structlog.testing.capture_logs() as logs:
        await built.process(message())
        effects.fail = True
        with pytest.raises(RuntimeError):
            await built.process(message("m2"))
    fields = {"consumer": "billing", "message_type": "OrderPlaced", "attempt": 1}
    assert [e for e in logs if e["event"].startswith("message_")] == [
        {
            "event": "message_processed",
            "log_level": "debug",
            "message_id": "m1",
            "outcome": "handled",
            **fields,
        },
        {
            "event": "message_processing_failed",
            "log_level": "warning",
            "message_id": "m2",
            "error_type": "RuntimeError",
            **fields,
        },
    ]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    effects.fail = False
    with structlog.testing.capture_logs() as quiet:
        await built.process(message("m3"))
        effects.fail = True
        with pytest.raises(RuntimeError):
            await built.process(message("m4"))
    assert [e["event"] for e in quiet] == ["message_processing_failed"]
