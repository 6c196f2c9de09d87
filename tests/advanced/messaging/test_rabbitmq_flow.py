"""Commands to a remote handler through the outbox, the relay and a real RabbitMQ.

The shop and billing each have a SQLite file of their own; the broker is the
session's throwaway node. Names are unique per test.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aio_pika
import pytest
from opentelemetry import trace

from cqrs_ddd_advanced_core.adapters.rabbitmq import (
    ConsumerTopology,
    RabbitMQPublisher,
    RabbitMQSubscriber,
)
from cqrs_ddd_advanced_core.domain.exceptions import PublishError
from cqrs_ddd_advanced_core.messaging import OutboxRelay
from cqrs_ddd_advanced_core.outbox import Backoff
from cqrs_ddd_core.persistence import OutboxMessage, OutboxStatus
from cqrs_ddd_core.testing import MetricCapture, SpanCapture
from tests.support.backends import sqlite_engine
from tests.support.messaging import Billing, Shop, create_billing_tables, until
from tests.support.rabbitmq import unique_name

FAST = Backoff(initial=timedelta(milliseconds=20), factor=2, maximum=timedelta(milliseconds=100))


@contextlib.asynccontextmanager
async def running(*coroutines: object) -> AsyncIterator[asyncio.Event]:
    """Run relay/subscriber loops until the block ends; their errors surface."""
    stop = asyncio.Event()
    tasks = [asyncio.ensure_future(c(stop)) for c in coroutines]  # type: ignore[operator]
    try:
        yield stop
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await asyncio.gather(*tasks)


@pytest.fixture
async def services(
    tmp_path: Path,
) -> AsyncIterator[tuple[Shop, Billing, SpanCapture, MetricCapture]]:
    spans, metrics = SpanCapture(), MetricCapture()
    (tmp_path / "shop").mkdir()
    (tmp_path / "billing").mkdir()
    async with (
        sqlite_engine(tmp_path / "shop") as shop_db,
        sqlite_engine(tmp_path / "billing") as billing_db,
    ):
        await create_billing_tables(billing_db)
        shop = Shop(shop_db, tracer_provider=spans.tracer_provider)
        billing = Billing(
            billing_db,
            tracer_provider=spans.tracer_provider,
            meter_provider=metrics.meter_provider,
        )
        yield shop, billing, spans, metrics
    spans.shutdown()
    metrics.shutdown()


async def test_committed_events_reach_the_remote_handler_once_in_order_in_one_trace(
    services: tuple[Shop, Billing, SpanCapture, MetricCapture], rabbitmq_url: str
) -> None:
    shop, billing, spans, metrics = services
    exchange = unique_name("events")
    topology = ConsumerTopology(unique_name("billing"), partitions=2, exchange=exchange)
    subscriber = RabbitMQSubscriber(rabbitmq_url, topology, backoff=FAST)
    await subscriber.declare()
    async with RabbitMQPublisher(
        rabbitmq_url, exchange=exchange, tracer_provider=spans.tracer_provider
    ) as publisher:
        relay = OutboxRelay(
            shop.outbox, publisher, poll_interval=60, meter_provider=metrics.meter_provider
        )
        async with running(relay.run, lambda stop: subscriber.run(billing.consumer.process, stop)):
            # poll_interval=60: only the in-process wake on commit can be this quick.
            total = 0
            for n in range(3):
                total += await shop.place(f"o-{n}", items=2)
            await billing.wait_for(total)
    stored = await billing.stored()
    assert len(stored) == total == len(set(stored))
    for n in range(3):  # each order's events handled in version order
        versions = [v for order, v in billing.handled if order == f"o-{n}"]
        assert versions == [1, 2, 3]
    assert await shop.outbox.oldest_unpublished_at() is None
    assert relay.lag == 0.0

    command = next(
        s for s in spans.spans if s.name.startswith("PlaceOrder") or "PlaceOrder" in s.name
    )
    trace_id = command.context.trace_id
    producers = [s for s in spans.spans if s.kind is trace.SpanKind.PRODUCER]
    consumers = [s for s in spans.spans if s.kind is trace.SpanKind.CONSUMER]
    assert len(producers) == len(consumers) == total
    first_producer = next(s for s in producers if s.context.trace_id == trace_id)
    assert first_producer.parent is not None
    assert first_producer.parent.span_id == command.context.span_id
    assert first_producer.links
    assert first_producer.links[0].context.span_id == command.context.span_id
    assert first_producer.attributes["messaging.system"] == "rabbitmq"
    assert first_producer.name == f"publish {exchange}"
    remote = next(s for s in consumers if s.context.trace_id == trace_id)
    assert remote.parent is not None
    assert remote.parent.span_id == first_producer.context.span_id
    assert remote.attributes["messaging.consumer.group.name"] == "billing"
    assert metrics.value("messaging.client.sent.messages") == total
    assert (
        metrics.value(
            "messaging.client.consumed.messages",
            {
                "cqrs.outcome": "handled",
                "cqrs.message.type": "ItemAdded",
                "messaging.consumer.group.name": "billing",
            },
        )
        == 6
    )


async def test_a_redelivered_message_is_acknowledged_without_a_second_effect(
    services: tuple[Shop, Billing, SpanCapture, MetricCapture], rabbitmq_url: str
) -> None:
    shop, billing, _, metrics = services
    exchange = unique_name("events")
    topology = ConsumerTopology(unique_name("billing"), partitions=1, exchange=exchange)
    subscriber = RabbitMQSubscriber(rabbitmq_url, topology, backoff=FAST)
    await subscriber.declare()
    await shop.place("o-1")
    (message,) = await shop.outbox.claim_batch(10)
    async with RabbitMQPublisher(rabbitmq_url, exchange=exchange) as publisher:
        await publisher.publish(message)
        await publisher.publish(message)  # a relay killed before marking it published
        await publisher.publish(message)
    duplicates = {
        "cqrs.outcome": "duplicate",
        "cqrs.message.type": "OrderPlaced",
        "messaging.consumer.group.name": "billing",
    }
    async with running(lambda stop: subscriber.run(billing.consumer.process, stop)):
        await billing.wait_for(1)
        await until(lambda: _value(metrics, duplicates) >= 2)
    assert await billing.stored() == [("o-1", 1)]
    assert _value(metrics, duplicates) == 2
    assert billing.attempts[message.message_id] == 1


def _value(metrics: MetricCapture, attributes: dict[str, str]) -> float:
    try:
        return metrics.value("messaging.client.consumed.messages", attributes)
    except LookupError:
        return 0.0


async def test_a_failing_handler_is_retried_then_dead_lettered_while_other_streams_go_on(
    services: tuple[Shop, Billing, SpanCapture, MetricCapture], rabbitmq_url: str
) -> None:
    shop, billing, _, _ = services
    exchange = unique_name("events")
    topology = ConsumerTopology(unique_name("billing"), partitions=2, exchange=exchange)
    subscriber = RabbitMQSubscriber(rabbitmq_url, topology, backoff=FAST, max_attempts=3)
    await subscriber.declare()
    flaky: dict[str, int] = {}

    def fail(message: object) -> bool:
        order = message.aggregate_id  # type: ignore[attr-defined]
        if order == "poison":
            return True
        if order == "flaky":  # fails twice, then goes through
            flaky[order] = flaky.get(order, 0) + 1
            return flaky[order] <= 2
        return False

    billing.fail = fail
    await shop.place("poison")
    await shop.place("flaky")
    await shop.place("fine", items=1)
    async with RabbitMQPublisher(rabbitmq_url, exchange=exchange) as publisher:
        relay = OutboxRelay(shop.outbox, publisher, poll_interval=0.2)
        async with running(relay.run, lambda stop: subscriber.run(billing.consumer.process, stop)):
            await billing.wait_for(3)
            dead = await _get_one(rabbitmq_url, topology.dead_letter_queue)
    assert sorted(await billing.stored()) == [("fine", 1), ("fine", 2), ("flaky", 1)]
    assert dead.headers["cqrs-aggregate-id"] == "poison"
    poison_id = dead.message_id
    assert billing.attempts[poison_id] == 3
    assert billing.attempt_numbers[poison_id] == [1, 2, 3]
    assert not await billing.inbox.has_handled(billing.name, poison_id)


async def _get_one(url: str, queue_name: str) -> aio_pika.abc.AbstractIncomingMessage:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, durable=True)
        async with asyncio.timeout(30):
            while True:
                message = await queue.get(fail=False)
                if message is not None:
                    await message.ack()
                    return message
                await asyncio.sleep(0.05)


async def test_an_unreachable_broker_fails_publishes_and_the_relay_retries_then_dead_letters(
    services: tuple[Shop, Billing, SpanCapture, MetricCapture],
) -> None:
    shop, _, _, _ = services
    await shop.place("o-1")
    publisher = RabbitMQPublisher("amqp://guest:guest@127.0.0.1:1/", connect_timeout=2)
    relay = OutboxRelay(shop.outbox, publisher, max_attempts=2, backoff=FAST)
    first = await relay.run_once()
    assert len(first.failed) == 1
    (message_id,) = first.failed
    stored = await shop.outbox.get(message_id)
    assert stored is not None
    assert stored.status is OutboxStatus.FAILED
    assert "PublishError" in (stored.last_error or "")
    async with asyncio.timeout(10):
        while (await shop.outbox.get(message_id)).status is not OutboxStatus.DEAD:  # type: ignore[union-attr]
            await relay.run_once()
            await asyncio.sleep(0.05)
    assert [m.message_id for m in await shop.outbox.dead_letters()] == [message_id]
    assert relay.lag is not None
    assert relay.lag > 0


async def test_a_message_the_broker_refuses_raises_publish_error_and_stays_unpublished(
    services: tuple[Shop, Billing, SpanCapture, MetricCapture], rabbitmq_url: str
) -> None:
    shop, _, spans, _ = services
    exchange = unique_name("events")
    connection = await aio_pika.connect(rabbitmq_url)
    async with connection:  # a full queue that refuses new messages: RabbitMQ nacks them
        channel = await connection.channel()
        queue = await channel.declare_queue(
            unique_name("full"),
            exclusive=True,
            arguments={"x-max-length": 0, "x-overflow": "reject-publish"},
        )
        events = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        await queue.bind(events, "#")
        await shop.place("o-1")
        async with RabbitMQPublisher(
            rabbitmq_url, exchange=exchange, tracer_provider=spans.tracer_provider
        ) as publisher:
            (message,) = await shop.outbox.claim_batch(10)
            with pytest.raises(PublishError, match="did not"):
                await publisher.publish(message)
            await shop.outbox.release([message.message_id])
            result = await OutboxRelay(shop.outbox, publisher).run_once()
    assert result.failed == [message.message_id]
    stored = await shop.outbox.get(message.message_id)
    assert stored is not None
    assert stored.status is OutboxStatus.FAILED
    assert (stored.last_error or "").startswith("PublishError")
    producers = [s for s in spans.spans if s.kind is trace.SpanKind.PRODUCER]
    assert len(producers) == 2
    assert all(s.status.status_code is trace.StatusCode.ERROR for s in producers)
    assert producers[0].attributes["error.type"].endswith("PublishError")


async def test_an_undecodable_message_is_dead_lettered_at_once(
    services: tuple[Shop, Billing, SpanCapture, MetricCapture], rabbitmq_url: str
) -> None:
    _, billing, _, _ = services
    exchange = unique_name("events")
    topology = ConsumerTopology(unique_name("billing"), partitions=1, exchange=exchange)
    subscriber = RabbitMQSubscriber(rabbitmq_url, topology, backoff=FAST)
    await subscriber.declare()
    connection = await aio_pika.connect(rabbitmq_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        events = await channel.get_exchange(exchange)
        await events.publish(
            aio_pika.Message(b"not json", message_id="m-bad", headers={"cqrs-stream": "x"}),
            "Order.OrderPlaced.0",
        )
    async with running(lambda stop: subscriber.run(billing.consumer.process, stop)):
        dead = await _get_one(rabbitmq_url, topology.dead_letter_queue)
    assert dead.message_id == "m-bad"
    assert billing.attempts == {}  # never reached the handler


async def test_without_a_tracing_sdk_a_message_carries_the_commands_stored_context(
    rabbitmq_url: str,
) -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    exchange = unique_name("events")
    sent = OutboxMessage(
        "m-1",
        "OrderPlaced",
        {"total": 3},
        datetime(2026, 1, 1, tzinfo=UTC),
        aggregate_type="Order",
        aggregate_id="o-1",
        correlation_id="flow-1",
        trace_context={"traceparent": traceparent},
        aggregate_version=1,
    )
    connection = await aio_pika.connect(rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(unique_name("sink"), exclusive=True)
        events = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        await queue.bind(events, "#")
        async with RabbitMQPublisher(
            rabbitmq_url, exchange=exchange, tracer_provider=trace.NoOpTracerProvider()
        ) as publisher:
            await publisher.publish(sent)
        # Confirmed: the queue has it (a confirm follows the routing to every queue).
        received = await queue.get(timeout=30)
    assert received.headers["traceparent"] == traceparent
    assert received.message_id == "m-1"
    assert received.correlation_id == "flow-1"
    assert received.delivery_mode is aio_pika.DeliveryMode.PERSISTENT
