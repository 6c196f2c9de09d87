"""Batches from a real RabbitMQ queue into PostgreSQL: a delivery failing mid-batch is
retried alone and dead-lettered, the others commit once, each stream stays in order."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import aio_pika
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from cqrs_ddd_advanced_core.adapters.rabbitmq import (
    ConsumerTopology,
    RabbitMQPublisher,
    RabbitMQSubscriber,
)
from cqrs_ddd_advanced_core.messaging import IncomingMessage, OutboxRelay
from cqrs_ddd_advanced_core.outbox import Backoff
from cqrs_ddd_core.persistence import InboxTransaction
from tests.support.messaging import Billing, Shop, charges, create_billing_tables, until
from tests.support.rabbitmq import unique_name

pytestmark = pytest.mark.postgres

FAST = Backoff(initial=timedelta(milliseconds=20), factor=2, maximum=timedelta(milliseconds=100))
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


async def _published(shop: Shop, url: str, exchange: str, orders: int, items: int) -> list[str]:
    """Events of ``orders`` orders in the shop's outbox, published (the consumer not running)."""
    for i in range(orders):
        await shop.place(f"o-{i}", items=items)
    ids: list[str] = []
    async with RabbitMQPublisher(url, exchange=exchange) as publisher:
        relay = OutboxRelay(shop.outbox, publisher, batch_size=500)
        while True:
            result = await relay.run_once()
            if not result.published:
                break
            ids.extend(result.published)
    return ids


async def _dead(url: str, queue: str) -> list[str]:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        got = []
        dead = await channel.declare_queue(queue, durable=True, passive=True)
        while (message := await dead.get(fail=False, timeout=5)) is not None:
            got.append(message.message_id or "")
            await message.ack()
        return got


async def test_a_delivery_failing_mid_batch_is_dead_lettered_and_the_others_commit_once(
    pg_engine: AsyncEngine, rabbitmq_url: str
) -> None:
    await create_billing_tables(pg_engine)
    shop = Shop(pg_engine)
    exchange = unique_name("events")
    topology = ConsumerTopology(unique_name("billing"), partitions=1, exchange=exchange)
    subscriber = RabbitMQSubscriber(
        rabbitmq_url, topology, backoff=FAST, max_attempts=3, batch_size=64
    )
    await subscriber.declare()
    ids = await _published(shop, rabbitmq_url, exchange, orders=6, items=3)  # 24 messages
    poison = ids[5]  # in the first batch, with deliveries before and after it
    billing = Billing(pg_engine, fail=lambda m: m.message_id == poison)
    # One queue holds them all when the consumer starts: its first batch is what is ready.
    async with running(lambda stop: subscriber.run(billing, stop)):
        await billing.wait_for(len(ids) - 1)
        dead = await _dead(rabbitmq_url, topology.dead_letter_queue)
    assert dead == [poison]
    assert billing.attempt_numbers[poison] == [1, 2, 3]
    # The deliveries before it in its batch ran in the transaction that was rolled back,
    # then in the one that committed; none ran more often.
    assert all(billing.attempts[i] <= 2 for i in ids if i != poison)
    assert sorted(billing.handled_ids) == sorted(i for i in ids if i != poison)
    async with pg_engine.connect() as conn:
        stored = (await conn.execute(select(charges.c.message_id))).scalars().all()
        inbox_rows = await conn.scalar(
            text("SELECT count(*) FROM inbox WHERE consumer = :c"), {"c": billing.name}
        )
    assert Counter(stored) == Counter(i for i in ids if i != poison)  # each effect once
    assert inbox_rows == len(ids) - 1
    poisoned = await shop.outbox.get(poison)
    assert poisoned is not None
    # Every other stream in version order; the poisoned one's later events came after it.
    assert in_version_order([h for h in billing.handled if h[0] != poisoned.aggregate_id])
    versions = [v for o, v in billing.handled if o == poisoned.aggregate_id]
    assert versions == sorted(versions)


async def test_a_batch_keeps_every_stream_in_order_and_commits_each_effect_once(
    pg_engine: AsyncEngine, rabbitmq_url: str
) -> None:
    await create_billing_tables(pg_engine)
    shop = Shop(pg_engine)
    exchange = unique_name("events")
    topology = ConsumerTopology(unique_name("billing"), partitions=2, exchange=exchange)
    subscriber = RabbitMQSubscriber(rabbitmq_url, topology, backoff=FAST, batch_size=16)
    await subscriber.declare()
    ids = await _published(shop, rabbitmq_url, exchange, orders=10, items=4)
    billing = Billing(pg_engine, fail=lambda m: m.attempt == 1 and m.message_id in ids[7::9])
    async with running(lambda stop: subscriber.run(billing, stop)):
        await billing.wait_for(len(ids))
        await until(lambda: billing.outcomes["handled"] == len(ids))
    assert in_version_order(billing.handled)
    assert sorted(billing.handled_ids) == sorted(ids)
    async with pg_engine.connect() as conn:
        count = await conn.scalar(select(func.count()).select_from(charges))
    assert count == len(ids)


class TransactionsSeen(Billing):
    """Billing that notes which partition queues each transaction's deliveries came from."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.queues_by_transaction: dict[int, set[str]] = {}
        self._labels = 0

    async def charge(self, message: IncomingMessage, tx: InboxTransaction) -> None:
        label = getattr(tx, "test_label", None)
        if label is None:
            self._labels += 1
            label = self._labels
            tx.test_label = label  # type: ignore[attr-defined]
        self.queues_by_transaction.setdefault(label, set()).add(message.destination)
        await super().charge(message, tx)


async def test_what_several_partition_queues_have_ready_shares_one_transaction(
    pg_engine: AsyncEngine, rabbitmq_url: str
) -> None:
    await create_billing_tables(pg_engine)
    shop = Shop(pg_engine)
    exchange = unique_name("events")
    topology = ConsumerTopology(unique_name("billing"), partitions=4, exchange=exchange)
    subscriber = RabbitMQSubscriber(rabbitmq_url, topology, backoff=FAST, transactions=1)
    await subscriber.declare()
    ids = await _published(shop, rabbitmq_url, exchange, orders=12, items=2)
    billing = TransactionsSeen(pg_engine)
    async with running(lambda stop: subscriber.run(billing.consumer.process, stop)):
        await billing.wait_for(len(ids))
    assert sorted(billing.handled_ids) == sorted(ids)
    assert in_version_order(billing.handled)
    assert max(len(queues) for queues in billing.queues_by_transaction.values()) > 1
    assert len(billing.queues_by_transaction) < len(ids)  # fewer transactions than deliveries
