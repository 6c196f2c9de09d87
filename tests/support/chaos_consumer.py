"""A consumer process for the chaos test: ``python -m tests.support.chaos_consumer ...``.

It consumes a service's partition queues and records every effect in
``chaos_effects`` (no unique constraint: a second effect of one message would show),
with a sequence number in the order they committed. Orders whose id starts with
``poison`` make the handler fail (a fault injected on purpose: dead-lettered).
Stops on SIGTERM; the test SIGKILLs it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from datetime import timedelta

import structlog
from sqlalchemy import BigInteger, Column, Identity, MetaData, String, Table, insert

from cqrs_ddd_advanced_core.adapters.rabbitmq import ConsumerTopology, RabbitMQSubscriber
from cqrs_ddd_advanced_core.messaging import IncomingMessage, MessageConsumer
from cqrs_ddd_advanced_core.outbox import Backoff
from cqrs_ddd_core.adapters.sqlalchemy import SQLAlchemyInboxStore, create_engine
from cqrs_ddd_core.persistence import InboxTransaction

__all__ = ["PARTITIONS", "effects", "effects_metadata", "topology"]

PARTITIONS = 4
effects_metadata = MetaData()
effects = Table(
    "chaos_effects",
    effects_metadata,
    Column("seq", BigInteger, Identity(), primary_key=True),
    Column("message_id", String(64), nullable=False),
    Column("order_id", String(64), nullable=False),
    Column("version", BigInteger, nullable=False),
)


def topology(service: str, exchange: str) -> ConsumerTopology:
    return ConsumerTopology(service, partitions=PARTITIONS, exchange=exchange)


KILL_AFTER_COMMIT_OF: set[str] = set()
"""Message ids whose commit SIGKILLs this process at once (after the commit, before the acks)."""


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


async def handle(message: IncomingMessage, tx: InboxTransaction) -> None:
    if (message.aggregate_id or "").startswith("poison"):
        raise RuntimeError(f"poison {message.message_id}")
    if message.message_id in KILL_AFTER_COMMIT_OF:
        tx.after_commit(_die)
    await tx.connection.execute(
        insert(effects).values(
            message_id=message.message_id,
            order_id=message.aggregate_id,
            version=message.aggregate_version,
        )
    )


async def main(args: argparse.Namespace) -> None:
    engine = create_engine(args.database_url)
    consumer = MessageConsumer(args.service, SQLAlchemyInboxStore(engine))
    for event_type in ("OrderPlaced", "ItemAdded"):
        consumer.subscribe(event_type, handle)
    subscriber = RabbitMQSubscriber(
        args.broker_url,
        topology(args.service, args.exchange),
        max_attempts=3,
        backoff=Backoff(initial=timedelta(milliseconds=20), maximum=timedelta(milliseconds=100)),
        reconnect_delay=0.3,
        connect_timeout=3,
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await subscriber.run(consumer.process, stop)
    finally:
        await engine.dispose()


if __name__ == "__main__":
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    parser = argparse.ArgumentParser()
    for name in ("--database-url", "--broker-url", "--service", "--exchange"):
        parser.add_argument(name, required=True)
    parser.add_argument("--kill-after-commit-of", action="append", default=[])
    arguments = parser.parse_args()
    KILL_AFTER_COMMIT_OF.update(arguments.kill_after_commit_of)
    asyncio.run(main(arguments))
