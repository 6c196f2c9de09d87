"""A consumer whose database stops answering (a real PostgreSQL behind a fault proxy,
a real RabbitMQ): no delivery is acknowledged, every attempt ends within its bound,
and the subscriber stops when asked."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import aio_pika
import pytest

from cqrs_ddd_advanced_core.adapters.rabbitmq import (
    ConsumerTopology,
    RabbitMQPublisher,
    RabbitMQSubscriber,
)
from cqrs_ddd_advanced_core.messaging import IncomingMessage, MessageConsumer, Outcome
from cqrs_ddd_advanced_core.outbox import Backoff
from cqrs_ddd_core.adapters.sqlalchemy import SQLAlchemyInboxStore
from cqrs_ddd_core.persistence import InboxTransaction, OutboxMessage
from tests.support.faultproxy import running_proxy
from tests.support.messaging import until
from tests.support.postgres import empty_pg_engine
from tests.support.rabbitmq import unique_name

pytestmark = pytest.mark.postgres

BOUND = 0.5  # seconds one processing attempt may take


def event(message_id: str) -> OutboxMessage:
    return OutboxMessage(
        message_id=message_id,
        message_type="Happened",
        payload={"n": 1},
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        aggregate_type="Thing",
        aggregate_id=message_id,
        aggregate_version=1,
    )


@pytest.mark.timeout(90)
async def test_a_frozen_database_gets_no_ack_and_no_attempt_outlives_its_bound(
    rabbitmq_url: str, postgres_database_url: str
) -> None:
    exchange, service = unique_name("frozen"), unique_name("frozen-svc")
    topology = ConsumerTopology(service, partitions=1, exchange=exchange)
    subscriber = RabbitMQSubscriber(
        rabbitmq_url,
        topology,
        max_attempts=1000,  # the database's fault, not the message's: never dead-lettered here
        backoff=Backoff(initial=timedelta(seconds=0.05), maximum=timedelta(seconds=0.05)),
        process_timeout=BOUND,
    )
    await subscriber.declare()
    with running_proxy(postgres_database_url) as proxy:
        async with empty_pg_engine(proxy.url(postgres_database_url), pool_size=1) as engine:
            inbox = SQLAlchemyInboxStore(engine)
            consumer = MessageConsumer(service, inbox)
            handled: list[str] = []

            async def handler(message: IncomingMessage, tx: InboxTransaction) -> None:
                tx.after_commit(lambda: handled.append(message.message_id))

            consumer.subscribe("Happened", handler)
            attempts: list[tuple[str, float, str]] = []  # message id, seconds, outcome

            async def timed(message: IncomingMessage) -> Outcome:
                start = time.monotonic()
                try:
                    outcome = await consumer.process(message)
                except BaseException as exc:
                    attempts.append((message.message_id, time.monotonic() - start, repr(exc)))
                    raise
                attempts.append((message.message_id, time.monotonic() - start, outcome.value))
                return outcome

            stop = asyncio.Event()
            running = asyncio.create_task(subscriber.run(timed, stop))
            try:
                async with RabbitMQPublisher(rabbitmq_url, exchange=exchange) as publisher:
                    await publisher.publish(event("before"))
                    await until(lambda: handled == ["before"])  # the pool's connection is open
                    proxy.freeze_all()
                    await publisher.publish(event("frozen"))
                    await until(lambda: sum(a[0] == "frozen" for a in attempts) >= 3)
            finally:
                stop.set()
                async with asyncio.timeout(15):  # it stops although the database is frozen
                    await running
            frozen = [a for a in attempts if a[0] == "frozen"]
            # The bound, plus the driver giving up the frozen connection (about 2 s here).
            assert all(seconds < BOUND + 5.0 for _, seconds, _ in frozen), frozen
            assert all("Cancelled" in outcome for *_, outcome in frozen)  # cut at the bound
            assert handled == ["before"]
            proxy.thaw()
            assert not await inbox.has_handled(service, "frozen")
    # Never acknowledged: the broker holds it for the next consumer.
    connection = await aio_pika.connect(rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(topology.queues[0], passive=True)
        delivery = await queue.get(timeout=10, fail=False)
        assert delivery is not None
        assert delivery.message_id == "frozen"
        await delivery.reject(requeue=False)
