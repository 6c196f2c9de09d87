"""Several relays and several consumers at once on PostgreSQL: each effect once, each
stream in version order; relays wake on PostgreSQL NOTIFY; a broker restart loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cqrs_ddd_advanced_core.adapters.rabbitmq import (
    ConsumerTopology,
    RabbitMQPublisher,
    RabbitMQSubscriber,
)
from cqrs_ddd_advanced_core.messaging import OutboxRelay
from cqrs_ddd_advanced_core.outbox import Backoff
from cqrs_ddd_core.adapters.sqlalchemy import OutboxListener, SQLAlchemyOutboxStore, create_engine
from tests.support.messaging import Billing, Shop, create_billing_tables, until
from tests.support.rabbitmq import RabbitMQServer, unique_name

pytestmark = pytest.mark.postgres

FAST = Backoff(initial=timedelta(milliseconds=50), factor=2, maximum=timedelta(milliseconds=500))
Loop = Callable[[asyncio.Event], Awaitable[None]]


@contextlib.asynccontextmanager
async def running(*loops: Loop) -> AsyncIterator[None]:
    stop = asyncio.Event()
    tasks = [asyncio.ensure_future(loop(stop)) for loop in loops]
    try:
        yield
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await asyncio.gather(*tasks)


def in_version_order(handled: list[tuple[str, int]]) -> bool:
    seen: dict[str, int] = {}
    for order, version in handled:
        if version != seen.get(order, 0) + 1:
            return False
        seen[order] = version
    return True


async def test_two_relays_and_two_consumers_keep_every_stream_in_order_and_apply_each_once(
    pg_engine: AsyncEngine, postgres_database_url: str, rabbitmq_url: str
) -> None:
    await create_billing_tables(pg_engine)  # billing's table beside the shop's, same database
    shop = Shop(pg_engine)
    billing = Billing(pg_engine)
    exchange = unique_name("events")
    topology = ConsumerTopology(unique_name("billing"), partitions=3, exchange=exchange)
    subscribers = [RabbitMQSubscriber(rabbitmq_url, topology, backoff=FAST) for _ in range(2)]
    await subscribers[0].declare()
    # Each relay has its own engine and store, as a relay in another process would:
    # only PostgreSQL's NOTIFY wakes it (poll_interval=60).
    engines = [create_engine(postgres_database_url) for _ in range(2)]
    publishers = [RabbitMQPublisher(rabbitmq_url, exchange=exchange) for _ in range(2)]
    relays = [
        OutboxRelay(
            SQLAlchemyOutboxStore(engine),
            publisher,
            batch_size=7,
            poll_interval=60,
            listener=OutboxListener(engine),
        )
        for engine, publisher in zip(engines, publishers, strict=True)
    ]
    rng = random.Random(3)
    orders = [f"o-{i}" for i in range(12)]
    try:
        loops: list[Loop] = [r.run for r in relays]
        loops += [lambda stop, s=s: s.run(billing.consumer.process, stop) for s in subscribers]
        async with running(*loops):
            await until(lambda: all(s.ready.is_set() for s in subscribers))
            await until(lambda: all(r.lag is not None for r in relays))  # listening

            async def sender(chosen: list[str]) -> int:
                count = 0
                for order in chosen:
                    count += await shop.place(order, items=rng.randint(1, 4))
                return count

            total = sum(await asyncio.gather(*(sender(orders[i::4]) for i in range(4))))
            await billing.wait_for(total)
    finally:
        for publisher in publishers:
            await publisher.close()
        for engine in engines:
            await engine.dispose()
    stored = await billing.stored()
    assert len(stored) == total == len(set(stored))  # each effect once
    assert in_version_order(billing.handled)  # per stream, committed in version order


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_a_broker_restart_loses_and_reorders_nothing(
    pg_engine: AsyncEngine, rabbitmq_url: str, rabbitmq_server: RabbitMQServer
) -> None:
    await create_billing_tables(pg_engine)
    shop = Shop(pg_engine)
    billing = Billing(pg_engine)
    exchange = unique_name("events")
    topology = ConsumerTopology(unique_name("billing"), partitions=2, exchange=exchange)
    subscriber = RabbitMQSubscriber(rabbitmq_url, topology, backoff=FAST, reconnect_delay=0.5)
    await subscriber.declare()
    publisher = RabbitMQPublisher(rabbitmq_url, exchange=exchange, connect_timeout=2)
    relay = OutboxRelay(shop.outbox, publisher, poll_interval=0.2, backoff=FAST, max_attempts=1000)
    total = 0
    try:
        async with running(relay.run, lambda stop: subscriber.run(billing.consumer.process, stop)):
            for n in range(10):
                total += await shop.place(f"before-{n}", items=2)
            restart = asyncio.create_task(asyncio.to_thread(rabbitmq_server.restart))
            while not restart.done():  # commands keep coming while the broker is away
                total += await shop.place(f"during-{total}", items=1)
                await asyncio.sleep(0.1)
            await restart
            for n in range(10):
                total += await shop.place(f"after-{n}", items=2)
            await billing.wait_for(total, seconds=120)
    finally:
        await publisher.close()
    stored = await billing.stored()
    assert len(stored) == total == len(set(stored))
    assert in_version_order(billing.handled)
    assert await shop.outbox.oldest_unpublished_at() is None
