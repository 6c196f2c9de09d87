"""The consumer process of the latency run: ``python -m benchmarks.latency_consumer ...``.

Consumes a service's partition queues through a ``MessageConsumer`` whose inbox is on
PostgreSQL, and prints ``<aggregate id> <unix time>`` once each effect committed.
Stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from typing import Any

import structlog

from cqrs_ddd_advanced_core.adapters.rabbitmq import ConsumerTopology, RabbitMQSubscriber
from cqrs_ddd_advanced_core.messaging import IncomingMessage, MessageConsumer
from cqrs_ddd_core.adapters.sqlalchemy import SQLAlchemyInboxStore, create_engine


async def main(args: argparse.Namespace) -> None:
    # Up to 4 batch transactions at once (the subscriber's default), or one delivery per
    # partition queue with batch_size=1, each on a connection of its own: a smaller pool
    # opens and closes a connection for the ones beyond it.
    engine = create_engine(args.database_url, pool_size=args.partitions)
    consumer = MessageConsumer(args.service, SQLAlchemyInboxStore(engine))

    async def effect(message: IncomingMessage, tx: Any) -> None:
        key = message.aggregate_id
        tx.after_commit(lambda: print(key, time.time(), flush=True))

    consumer.subscribe("AccountOpened", effect)
    topology = ConsumerTopology(args.service, partitions=args.partitions, exchange=args.exchange)
    subscriber = RabbitMQSubscriber(args.broker_url, topology)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    task = asyncio.create_task(subscriber.run(consumer.process, stop))
    await subscriber.ready.wait()
    print("ready", flush=True)
    await task
    await engine.dispose()


if __name__ == "__main__":
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    parser = argparse.ArgumentParser()
    for name in ("--database-url", "--broker-url", "--service", "--exchange"):
        parser.add_argument(name, required=True)
    parser.add_argument("--partitions", type=int, default=16)
    asyncio.run(main(parser.parse_args()))
    sys.exit(0)
