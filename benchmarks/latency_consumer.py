"""The consumer process of the latency run: ``python -m benchmarks.latency_consumer ...``.

Consumes a service's partition queues through a ``MessageConsumer`` whose inbox is on
PostgreSQL, and prints ``<aggregate id> <unix time>`` once each effect committed.
Stops on SIGTERM. With ``CQRS_BENCH_CONSUMER_PROFILE=<file>`` it runs under
``cProfile`` (CPU clock) from "ready" to the stop and writes the statistics there;
with ``CQRS_BENCH_CONSUMER_BATCHES=<file>`` it writes there, as JSON, how many
deliveries each transaction held (``{size: transactions}``); with
``CQRS_BENCH_CONSUMER_OPTIONS=<JSON object>`` the subscriber gets those keyword arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import logging
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from cqrs_ddd_advanced_core.adapters.rabbitmq import ConsumerTopology, RabbitMQSubscriber
from cqrs_ddd_advanced_core.messaging import IncomingMessage, MessageConsumer, Outcome
from cqrs_ddd_core.adapters.sqlalchemy import SQLAlchemyInboxStore, create_engine


class CountingConsumer(MessageConsumer):
    """Counts the deliveries of each batch the subscriber hands over (its transactions)."""

    sizes: Counter[int] = Counter()

    async def process_batch(
        self, messages: Sequence[IncomingMessage]
    ) -> list[Outcome | Exception | None]:
        self.sizes[len(messages)] += 1
        return await super().process_batch(messages)


def _report(line: str) -> None:
    sys.stdout.write(line)
    sys.stdout.flush()


async def main(args: argparse.Namespace) -> None:
    # Up to 4 batch transactions at once (the subscriber's default), or one delivery per
    # partition queue with batch_size=1, each on a connection of its own: a smaller pool
    # opens and closes a connection for the ones beyond it.
    engine = create_engine(args.database_url, pool_size=args.partitions)
    batches_to = os.environ.get("CQRS_BENCH_CONSUMER_BATCHES")
    kind = CountingConsumer if batches_to else MessageConsumer
    consumer = kind(args.service, SQLAlchemyInboxStore(engine))

    async def effect(message: IncomingMessage, tx: Any) -> None:
        key = message.aggregate_id
        # One write per effect: print() makes four system calls of it when Python
        # runs unbuffered (PYTHONUNBUFFERED), which the consumer's CPU would count.
        tx.after_commit(lambda: _report(f"{key} {time.time()}\n"))

    consumer.subscribe("AccountOpened", effect)
    topology = ConsumerTopology(args.service, partitions=args.partitions, exchange=args.exchange)
    options = json.loads(os.environ.get("CQRS_BENCH_CONSUMER_OPTIONS") or "{}")
    subscriber = RabbitMQSubscriber(args.broker_url, topology, **options)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    task = asyncio.create_task(subscriber.run(consumer.process, stop))
    await subscriber.ready.wait()
    profile_to = os.environ.get("CQRS_BENCH_CONSUMER_PROFILE")
    profile = cProfile.Profile(time.process_time) if profile_to else None
    print("ready", flush=True)
    if profile is not None:
        profile.enable()
    await task
    if profile is not None and profile_to:
        profile.disable()
        profile.dump_stats(profile_to)
    if batches_to:
        sizes = json.dumps(dict(sorted(CountingConsumer.sizes.items())))
        await asyncio.to_thread(Path(batches_to).write_text, sizes, encoding="utf-8")
    await engine.dispose()


if __name__ == "__main__":
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    parser = argparse.ArgumentParser()
    for name in ("--database-url", "--broker-url", "--service", "--exchange"):
        parser.add_argument(name, required=True)
    parser.add_argument("--partitions", type=int, default=16)
    asyncio.run(main(parser.parse_args()))
    sys.exit(0)
