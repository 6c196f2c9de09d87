"""The RabbitMQ topology, declared idempotently by whoever needs it.

Producers (the relay's publisher) declare one durable **topic exchange**
(``cqrs.events`` by default) and publish each message with the routing key
``<aggregate type>.<event type>.<bucket>``, the bucket being a CRC-32 of the
stream name modulo 256 (:func:`~cqrs_ddd_advanced_core.messaging.headers.bucket`).

A consuming service ``S`` with ``P`` partitions declares::

    cqrs.events (topic) --[its patterns + ".*", e.g. "Order.*.*"]--> S.route (topic)
        --[*.*.<b> for the buckets b with b % P == i]--> S.i   (i = 0 .. P-1)
    S.0 ... (durable, x-single-active-consumer, dead letters -> S.dlx) ; S.dlx (fanout) -> S.dead

**Per-aggregate order with several consumers**: every message of one stream
has the same bucket, and each bucket is bound to exactly one partition queue
by static bindings (stored with the queues, the same after a broker restart;
RabbitMQ's consistent-hash exchange was tried first and dropped because its
ring can change when the node restarts, which reordered streams across the
restart). Each queue is *single active consumer*, so however many
consumer processes run, one of them at a time takes a partition's messages,
in queue order; it processes them one after the other (the subscriber never
runs two deliveries of one queue at once). If it dies, RabbitMQ hands the
queue, unacknowledged messages first, to the next consumer. More processes
give failover and spread partitions, not more parallelism than ``P``.

**Why two exchange hops, classic queues at the node's default version**
(measured with ``benchmarks/broker_cpu.py`` on RabbitMQ 3.10.8, 500 messages/s):
binding the partition queues to the events exchange itself, one hop less,
saves about 12% of the node's Erlang reductions per message but no CPU
measurable above the noise (about 0.04 ms of its 0.6-0.8 ms), too little for
a migration of every declared topology; classic queue version 2
(``x-queue-version``) cost the node twice the CPU per message, so the queues
do not ask for a version.

Re-declaring with the same arguments is a no-op; declaring a queue with
other arguments than it has fails (``PRECONDITION_FAILED``): the partition
count and dead-letter settings of a service are fixed once declared.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aio_pika

from cqrs_ddd_advanced_core.messaging.headers import BUCKETS

if TYPE_CHECKING:
    from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

__all__ = ["DEFAULT_EXCHANGE", "ConsumerTopology", "declare_exchange", "queue_depths"]

DEFAULT_EXCHANGE = "cqrs.events"


async def declare_exchange(
    channel: AbstractChannel, name: str = DEFAULT_EXCHANGE
) -> AbstractExchange:
    """Declare (idempotently) the durable topic exchange events are published to."""
    return await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)


@dataclass(frozen=True, slots=True)
class ConsumerTopology:
    """The exchanges and queues of one consuming service.

    Attributes:
        service: The service's name; prefixes its exchanges and queues.
        partitions: Partition queues (the most consumers working at once).
        bindings: Topic patterns of ``<aggregate type>.<event type>`` it wants
            (``Order.*``; ``#``: all); the bucket part is added.
        exchange: The events exchange it binds to.
    """

    service: str
    partitions: int = 4
    bindings: tuple[str, ...] = ("#",)
    exchange: str = DEFAULT_EXCHANGE

    def __post_init__(self) -> None:
        if not self.service:
            raise ValueError("ConsumerTopology needs a service name")
        if not 1 <= self.partitions <= BUCKETS:
            raise ValueError(f"partitions must be between 1 and {BUCKETS}, got {self.partitions}")
        if not self.bindings:
            raise ValueError("ConsumerTopology needs at least one binding pattern")

    @property
    def router_exchange(self) -> str:
        """The topic exchange that routes each bucket (so each stream) to one partition."""
        return f"{self.service}.route"

    @property
    def dead_letter_exchange(self) -> str:
        """Where rejected deliveries go."""
        return f"{self.service}.dlx"

    @property
    def dead_letter_queue(self) -> str:
        """The queue that keeps them."""
        return f"{self.service}.dead"

    @property
    def queues(self) -> tuple[str, ...]:
        """The partition queues, ``<service>.0`` ...."""
        return tuple(f"{self.service}.{i}" for i in range(self.partitions))

    async def declare(self, channel: AbstractChannel) -> list[AbstractQueue]:
        """Declare everything (idempotently); returns the partition queues."""
        events = await declare_exchange(channel, self.exchange)
        router = await channel.declare_exchange(
            self.router_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        for pattern in self.bindings:
            await router.bind(events, pattern if pattern == "#" else f"{pattern}.*")
        dlx = await channel.declare_exchange(
            self.dead_letter_exchange, aio_pika.ExchangeType.FANOUT, durable=True
        )
        dead = await channel.declare_queue(self.dead_letter_queue, durable=True)
        await dead.bind(dlx)
        queues = []
        for index, name in enumerate(self.queues):
            queue = await channel.declare_queue(
                name,
                durable=True,
                arguments={
                    "x-single-active-consumer": True,
                    "x-dead-letter-exchange": self.dead_letter_exchange,
                },
            )
            for bucket in range(index, BUCKETS, self.partitions):
                await queue.bind(router, f"*.*.{bucket}")
            queues.append(queue)
        return queues


async def queue_depths(
    url: str, names: Sequence[str], *, connect_timeout: float = 10.0
) -> dict[str, int]:
    """How many messages wait in each of the queues ``names`` (which must exist).

    For checks and dashboards-by-hand: a passive declare per queue.
    """
    connection = await aio_pika.connect(url, timeout=connect_timeout)
    async with connection:
        channel = await connection.channel()
        depths = {}
        for name in names:
            queue = await channel.declare_queue(name, passive=True)
            depths[name] = int(queue.declaration_result.message_count or 0)
        return depths
