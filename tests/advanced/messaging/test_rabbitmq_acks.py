"""Acknowledgements on a real RabbitMQ: several deliveries per ``basic.ack``, none lost.

The subscriber acknowledges what committed with ``multiple=True`` up to the
channel's floor (:mod:`cqrs_ddd_advanced_core.adapters.rabbitmq.acks`). Here:
fewer ack frames than deliveries and nothing left unacknowledged; a delivery in
retry does not hold back the acks (and so the prefetch window) of the deliveries
after it; a connection cut while a batch is in its transaction loses and repeats
no effect; a stop gives back what waited behind the batch; no aio-pika message
object is made of a delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import aio_pika
import aiormq
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from cqrs_ddd_advanced_core.adapters.rabbitmq import (
    ConsumerTopology,
    RabbitMQPublisher,
    RabbitMQSubscriber,
    queue_depths,
)
from cqrs_ddd_advanced_core.messaging import IncomingMessage, OutboxRelay
from cqrs_ddd_advanced_core.messaging.headers import routing_key
from cqrs_ddd_advanced_core.outbox import Backoff
from cqrs_ddd_core.persistence import InboxTransaction
from tests.support.faultproxy import Action, FaultProxy
from tests.support.messaging import Billing, Shop, charges, create_billing_tables, until
from tests.support.rabbitmq import unique_name

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

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


@pytest.fixture
def ack_frames(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """The ``multiple`` flag of every ``basic.ack`` the process sends (a spy on aiormq's
    public ``Channel.basic_ack``, which the subscriber acknowledges with; the call goes
    through)."""
    frames: list[bool] = []
    original = aiormq.Channel.basic_ack

    async def ack(
        self: aiormq.Channel, delivery_tag: int, multiple: bool = False, wait: bool = True
    ) -> None:
        frames.append(multiple)
        await original(self, delivery_tag, multiple=multiple, wait=wait)

    monkeypatch.setattr(aiormq.Channel, "basic_ack", ack)
    return frames


async def _published(shop: Shop, url: str, exchange: str, orders: int, first: int = 0) -> list[str]:
    """One ``OrderPlaced`` per order (``o-<first>``...) in the queues."""
    for i in range(first, first + orders):
        await shop.place(f"o-{i}")
    ids: list[str] = []
    async with RabbitMQPublisher(url, exchange=exchange) as publisher:
        relay = OutboxRelay(shop.outbox, publisher, batch_size=500)
        while (result := await relay.run_once()).published:
            ids.extend(result.published)
    return ids


async def _ready_in(url: str, topology: ConsumerTopology) -> int:
    """Messages waiting in the partition queues: unacknowledged ones are back once the
    consumer's connection closed."""
    return sum((await queue_depths(url, topology.queues)).values())


async def _consumed_by_billing(
    engine: AsyncEngine, url: str, orders: int
) -> tuple[list[str], Billing, ConsumerTopology]:
    """``orders`` published to a 4-partition billing service, consumed until each was
    handled; the subscriber has stopped (its connection closed) when this returns."""
    await create_billing_tables(engine)
    shop = Shop(engine)
    exchange = unique_name("events")
    topology = ConsumerTopology(unique_name("billing"), partitions=4, exchange=exchange)
    subscriber = RabbitMQSubscriber(url, topology)
    await subscriber.declare()
    ids = await _published(shop, url, exchange, orders=orders)
    billing = Billing(engine)
    async with running(lambda stop: subscriber.run(billing.consumer.process, stop)):
        await billing.wait_for(len(ids))
    return ids, billing, topology


async def test_a_backlog_is_acknowledged_with_fewer_frames_than_deliveries_and_none_left(
    pg_engine: AsyncEngine, rabbitmq_url: str, ack_frames: list[bool]
) -> None:
    ids, billing, topology = await _consumed_by_billing(pg_engine, rabbitmq_url, 80)
    # The connection is closed: whatever was not acknowledged would be ready again.
    assert await _ready_in(rabbitmq_url, topology) == 0
    assert sorted(billing.handled_ids) == sorted(ids)
    assert True in ack_frames
    assert len(ack_frames) < len(ids) / 2, ack_frames


async def test_deliveries_are_consumed_without_an_aio_pika_message_object_each(
    pg_engine: AsyncEngine, rabbitmq_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The subscriber consumes on the channel's aiormq channel and settles by delivery tag:
    # aio-pika's Queue.consume made an IncomingMessage (and a task) of each delivery, about
    # as much of the consumer's CPU as pamqp's decoding of the frames.
    built = Counter[str]()
    original = aio_pika.IncomingMessage.__init__

    def init(self: aio_pika.IncomingMessage, *args: Any, **kwargs: Any) -> None:
        built["IncomingMessage"] += 1
        original(self, *args, **kwargs)

    monkeypatch.setattr(aio_pika.IncomingMessage, "__init__", init)
    ids, billing, topology = await _consumed_by_billing(pg_engine, rabbitmq_url, 20)
    assert await _ready_in(rabbitmq_url, topology) == 0  # every one acknowledged
    assert sorted(billing.handled_ids) == sorted(ids)
    assert built == Counter()


async def test_a_delivery_in_retry_does_not_hold_back_the_acks_of_the_ones_after_it(
    pg_engine: AsyncEngine, rabbitmq_url: str
) -> None:
    await create_billing_tables(pg_engine)
    shop = Shop(pg_engine)
    exchange = unique_name("events")
    topology = ConsumerTopology(unique_name("billing"), partitions=2, exchange=exchange)
    # Four unacknowledged deliveries per queue at most: a queue whose committed deliveries
    # waited for the poison's settling would stop receiving after four.
    subscriber = RabbitMQSubscriber(
        rabbitmq_url,
        topology,
        prefetch=4,
        max_attempts=4,
        backoff=Backoff(initial=timedelta(seconds=1), factor=1, maximum=timedelta(seconds=1)),
        ack_hold=0.02,
    )
    await subscriber.declare()
    ids = await _published(shop, rabbitmq_url, exchange, orders=60)
    queue_of: dict[str, str] = {}
    for message_id in ids:
        stored = await shop.outbox.get(message_id)
        assert stored is not None
        queue_of[message_id] = topology.queues[int(routing_key(stored).rsplit(".", 1)[1]) % 2]
    poison = ids[0]
    others = [i for i in ids if queue_of[i] != queue_of[poison]]
    assert len(others) > 12
    billing = Billing(pg_engine, fail=lambda m: m.message_id == poison)
    async with running(lambda stop: subscriber.run(billing.consumer.process, stop)):
        # The poison is retried for three seconds; the other queue goes on meanwhile.
        await until(lambda: set(others) <= set(billing.handled_ids), seconds=30)
        assert len(billing.attempt_numbers[poison]) < 4
        await billing.wait_for(len(ids) - 1)
    assert await _ready_in(rabbitmq_url, topology) == 0
    assert billing.attempt_numbers[poison] == [1, 2, 3, 4]


class Gated(Billing):
    """Billing whose handler waits, for one message, until the test opens the gate."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()
        self.gated = ""
        self.gated_runs = 0  # how many times the gated message's handler ran

    async def charge(self, message: IncomingMessage, tx: InboxTransaction) -> None:
        if message.message_id == self.gated:
            self.gated_runs += 1
            if not self.gate.is_set():
                self.waiting.set()
                await self.gate.wait()
        await super().charge(message, tx)


async def test_stopping_gives_back_what_arrived_behind_a_batch_and_it_is_consumed_once_after(
    pg_engine: AsyncEngine, rabbitmq_url: str
) -> None:
    # One queue: its task is in a batch (gated) while four more deliveries arrive; asked to
    # stop, it finishes that batch (committed, acknowledged) and gives the four back.
    await create_billing_tables(pg_engine)
    shop = Shop(pg_engine)
    exchange = unique_name("events")
    topology = ConsumerTopology(unique_name("billing"), partitions=1, exchange=exchange)
    subscriber = RabbitMQSubscriber(rabbitmq_url, topology)
    await subscriber.declare()
    first = await _published(shop, rabbitmq_url, exchange, orders=1)
    billing = Gated(pg_engine)
    billing.gated = first[0]
    stop = asyncio.Event()
    task = asyncio.ensure_future(subscriber.run(billing.consumer.process, stop))
    try:
        async with asyncio.timeout(30):
            await billing.waiting.wait()
        behind = await _published(shop, rabbitmq_url, exchange, orders=4, first=1)
        async with asyncio.timeout(30):  # all four delivered (to its prefetch window)
            while await _ready_in(rabbitmq_url, topology):  # noqa: ASYNC110 (no event)
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        billing.gate.set()
        async with asyncio.timeout(30):
            await task
    assert billing.handled_ids == first
    assert await _ready_in(rabbitmq_url, topology) == len(behind)  # given back, not lost
    after = Billing(pg_engine)
    async with running(lambda stop: subscriber.run(after.consumer.process, stop)):
        await after.wait_for(len(behind))
    assert after.handled_ids == behind  # in order, each once
    assert await _ready_in(rabbitmq_url, topology) == 0


@dataclass
class Behind:
    """A consumer's set-up whose RabbitMQ connection goes through a fault proxy."""

    proxy: FaultProxy
    topology: ConsumerTopology
    subscriber: RabbitMQSubscriber
    ids: list[str]  # published, waiting in the queues


@contextlib.asynccontextmanager
async def behind_a_proxy(engine: AsyncEngine, url: str, orders: int) -> AsyncIterator[Behind]:
    """``orders`` orders placed and published, the subscriber declared (not running)."""
    await create_billing_tables(engine)
    shop = Shop(engine)
    exchange = unique_name("events")
    topology = ConsumerTopology(unique_name("billing"), partitions=4, exchange=exchange)
    broker = aio_pika.connection.make_url(url)
    proxy = FaultProxy(broker.host or "127.0.0.1", broker.port or 5672)
    port = proxy.start()
    try:
        subscriber = RabbitMQSubscriber(
            f"amqp://{broker.user}:{broker.password}@127.0.0.1:{port}/",
            topology,
            reconnect_delay=0.2,
            connect_timeout=5,
        )
        await subscriber.declare()
        ids = await _published(shop, url, exchange, orders=orders)
        yield Behind(proxy, topology, subscriber, ids)
    finally:
        proxy.stop()


async def _all_stored(engine: AsyncEngine, count: int) -> None:
    async with asyncio.timeout(60):  # the database says what committed
        while len(await _stored(engine)) < count:  # noqa: ASYNC110 (no event)
            await asyncio.sleep(0.05)


async def _stored(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return list((await conn.execute(select(charges.c.message_id))).scalars().all())


async def test_a_connection_cut_while_a_batch_is_in_its_transaction_repeats_no_effect(
    pg_engine: AsyncEngine, rabbitmq_url: str
) -> None:
    async with behind_a_proxy(pg_engine, rabbitmq_url, 40) as setup:
        ids, subscriber = setup.ids, setup.subscriber
        billing = Gated(pg_engine)
        billing.gated = ids[len(ids) // 2]
        async with running(lambda stop: subscriber.run(billing, stop)):
            async with asyncio.timeout(30):
                await billing.waiting.wait()  # its batch's transaction is open
            setup.proxy.cut_all()  # the channel dies with the batch in its transaction
            billing.gate.set()  # it commits (or the lost session cancels it); no acks
            await _all_stored(pg_engine, len(ids))
            # Its batch comes again on the new connection: skipped by the inbox if it
            # committed, or handled again if the lost session cancelled it first
            # (which of the two depends on when the cut reached the session).
            await until(lambda: billing.outcomes["duplicate"] >= 1 or billing.gated_runs >= 2)
    assert Counter(await _stored(pg_engine)) == Counter(ids)  # every effect, once


def test_a_negative_ack_hold_or_linger_is_refused() -> None:
    topology = ConsumerTopology("svc")
    with pytest.raises(ValueError, match="ack_hold"):
        RabbitMQSubscriber("amqp://x/", topology, ack_hold=-1)
    with pytest.raises(ValueError, match="linger"):
        RabbitMQSubscriber("amqp://x/", topology, linger=-0.1)


@pytest.mark.parametrize("action", ["drop_before", "drop_sent"])
async def test_a_connection_cut_as_a_queue_starts_consuming_is_survived(
    pg_engine: AsyncEngine, rabbitmq_url: str, action: Action
) -> None:
    # The cut reaches the lane in the middle of its basic.consume call: aiormq then
    # fails that call with whatever the connection was closed with (a bare
    # Exception, behind the cut test's rare timeouts), which ended run() for good.
    async with behind_a_proxy(pg_engine, rabbitmq_url, 20) as setup:
        queue = setup.topology.queues[-1].encode()
        # basic.consume (class 60, method 20), reserved short, the queue's name
        consume_frame = b"\x00\x3c\x00\x14\x00\x00" + bytes([len(queue)]) + queue
        fault = setup.proxy.arm(consume_frame, action)
        billing = Billing(pg_engine)
        async with running(lambda stop: setup.subscriber.run(billing, stop)):
            await until(fault.fired.is_set)
            await _all_stored(pg_engine, len(setup.ids))  # consumed on the next connection
    assert Counter(await _stored(pg_engine)) == Counter(setup.ids)


async def test_a_lane_failing_with_a_bare_exception_as_the_connection_dies_is_survived(
    pg_engine: AsyncEngine, rabbitmq_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Behind the cut test's rare timeouts: the connection cut while a basic.consume was in
    # flight, and aiormq failed that call with a bare Exception (the connection's close reason),
    # not an AMQP or OS error: the subscriber's run ended and nothing was consumed
    # again. Here the first consume on the last queue cuts the connection and fails so.
    consume = aiormq.Channel.basic_consume
    cuts: list[str] = []
    behind: list[Behind] = []

    async def cut_then_fail(
        self: aiormq.Channel, queue: str, *args: object, **kwargs: object
    ) -> object:
        if queue == behind[0].topology.queues[-1] and not cuts:
            cuts.append(queue)
            behind[0].proxy.cut_all()
            raise Exception  # what aiormq raised
        return await consume(self, queue, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(aiormq.Channel, "basic_consume", cut_then_fail)  # run() only
    async with behind_a_proxy(pg_engine, rabbitmq_url, 20) as setup:
        behind.append(setup)
        billing = Billing(pg_engine)
        async with running(lambda stop: setup.subscriber.run(billing, stop)):
            await _all_stored(pg_engine, len(setup.ids))  # consumed on the next connection
    assert cuts
    assert Counter(await _stored(pg_engine)) == Counter(setup.ids)
