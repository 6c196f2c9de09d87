"""Profile workload 8's processes one at a time: ``python -m benchmarks.profile_messaging``.

``relay``: ``K`` outbox rows (default 2,000) on PostgreSQL are drained to
RabbitMQ with confirms by an ``OutboxRelay``'s own loop, as in workload 8.
``raw``: raw aio-pika publishes the same messages (as workload 8's baseline).
``consumer``: ``K`` messages published beforehand to a service's 16 partition
queues are consumed by a ``MessageConsumer`` (inbox on PostgreSQL) behind a
``RabbitMQSubscriber``, as ``benchmarks.latency_consumer`` does. ``sender``:
``K`` persisted commands (8 at once), as workload 8's sender sends them.
``claim``: ``--rounds`` claims of ``K`` messages (``--messages 3``: a claim as
small as a relay's at 500 commands/s), each marking the previous claim's
messages published, as the relay's loop does (``claim_and_measure``); prints
this process's CPU per claim and the PostgreSQL backends' (``schedstat``).

Each case prints this process's CPU time per message (``time.process_time``,
the servers excluded); ``--profile`` runs it under ``cProfile`` (on a CPU clock) and prints the
top entries. Servers: ``CQRS_BENCH_POSTGRES_URL`` and ``CQRS_BENCH_RABBITMQ_URL``,
or throwaway ones (see ``benchmarks/pg.py`` and ``benchmarks/rabbitmq.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import time
from pathlib import Path
from typing import Any

from benchmarks.logs import configure_filtered
from benchmarks.workloads.messaging import BATCH, _analyze, _fill


async def _relay(persisted: Any, url: str, k: int, raw: bool, profile: Any) -> float:
    import aio_pika

    from benchmarks.workloads.messaging import raw_message
    from cqrs_ddd_advanced_core.adapters.rabbitmq import (
        ConsumerTopology,
        RabbitMQPublisher,
        declare_exchange,
    )
    from cqrs_ddd_advanced_core.messaging import OutboxRelay
    from cqrs_ddd_advanced_core.messaging.headers import routing_key
    from cqrs_ddd_core.adapters.sqlalchemy import SQLAlchemyOutboxStore

    name = f"prof-{time.time_ns()}"
    topology = ConsumerTopology(f"{name}-sink", partitions=2, exchange=name)
    store = SQLAlchemyOutboxStore(persisted.engine)
    connection = await aio_pika.connect(url)
    async with connection, RabbitMQPublisher(url, exchange=name) as publisher:
        channel = await connection.channel(publisher_confirms=True)
        await topology.declare(channel)
        exchange = await declare_exchange(channel, name)
        await _fill(persisted, k)
        messages = await store.claim_batch(k)
        await store.release([m.message_id for m in messages])
        left = {"n": k}
        stop = asyncio.Event()

        class Counting:
            async def publish(self, message: Any) -> None:
                await publisher.publish(message)
                left["n"] -= 1
                if left["n"] == 0:
                    stop.set()

        relay = OutboxRelay(store, Counting(), batch_size=BATCH, poll_interval=0.05)
        start = time.process_time()
        if profile is not None:
            profile.enable()
        if raw:
            for first in range(0, k, BATCH):
                await asyncio.gather(
                    *(
                        exchange.publish(raw_message(m), routing_key(m), mandatory=False)
                        for m in messages[first : first + BATCH]
                    )
                )
        else:
            await relay.run(stop)
        if profile is not None:
            profile.disable()
        spent = time.process_time() - start
        for queue in topology.queues:
            await (await channel.get_queue(queue)).purge()
    return spent


async def _consumer(persisted: Any, db_url: str, url: str, k: int, profile: Any) -> float:
    from cqrs_ddd_advanced_core.adapters.rabbitmq import (
        ConsumerTopology,
        RabbitMQPublisher,
        RabbitMQSubscriber,
    )
    from cqrs_ddd_advanced_core.messaging import IncomingMessage, MessageConsumer
    from cqrs_ddd_core.adapters.sqlalchemy import (
        SQLAlchemyInboxStore,
        SQLAlchemyOutboxStore,
        create_engine,
    )

    name = f"prof-{time.time_ns()}"
    topology = ConsumerTopology(name, partitions=16, exchange=name)
    subscriber = RabbitMQSubscriber(url, topology)
    await subscriber.declare()
    store = SQLAlchemyOutboxStore(persisted.engine)
    await _fill(persisted, k)
    messages = await store.claim_batch(k)
    async with RabbitMQPublisher(url, exchange=name) as publisher:
        for first in range(0, k, BATCH):
            await asyncio.gather(*(publisher.publish(m) for m in messages[first : first + BATCH]))
    await store.mark_published([m.message_id for m in messages])
    engine = create_engine(db_url, pool_size=16)
    consumer = MessageConsumer(name, SQLAlchemyInboxStore(engine))
    stop = asyncio.Event()
    done = {"n": 0}

    def one() -> None:
        done["n"] += 1
        if done["n"] == k:
            stop.set()

    async def effect(message: IncomingMessage, tx: Any) -> None:
        tx.after_commit(one)

    consumer.subscribe("AccountOpened", effect)
    start = time.process_time()
    if profile is not None:
        profile.enable()
    await subscriber.run(consumer.process, stop)
    if profile is not None:
        profile.disable()
    spent = time.process_time() - start
    await engine.dispose()
    return spent


async def _sender(persisted: Any, k: int, profile: Any) -> float:
    await _fill(persisted, 200)  # warm up
    start = time.process_time()
    if profile is not None:
        profile.enable()
    await _fill(persisted, k)
    if profile is not None:
        profile.disable()
    return time.process_time() - start


def _backends_cpu(database: str) -> float:
    """CPU seconds of the PostgreSQL backends serving ``database`` (autovacuum's left
    out), from ``/proc/<pid>/schedstat`` (nanoseconds: claims are far shorter than
    the clock ticks of ``/proc/<pid>/stat``)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            command = Path(f"/proc/{entry}/cmdline").read_text()
            if database in command and "autovacuum" not in command:
                total += int(Path(f"/proc/{entry}/schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):  # gone, or not ours to read
            continue
    return total / 1e9


async def _claims(persisted: Any, database: str, k: int, rounds: int, profile: Any) -> float:
    """``rounds`` claims of ``k`` messages, each marking the previous ``k`` published (the
    relay's ``claim_and_measure``); prints PostgreSQL's CPU per claim, returns ours."""
    from cqrs_ddd_core.adapters.sqlalchemy import SQLAlchemyOutboxStore

    store = SQLAlchemyOutboxStore(persisted.engine)
    await store.mark_published([m.message_id for m in await store.claim_batch(100_000)])
    await _fill(persisted, k * rounds)
    spent = server = 0.0
    published: list[str] = []
    for _ in range(rounds):
        before_server = _backends_cpu(database)
        start = time.process_time()
        if profile is not None:
            profile.enable()
        batch, _, _ = await store.claim_and_measure(published, k, measure=None)
        if profile is not None:
            profile.disable()
        spent += time.process_time() - start
        server += _backends_cpu(database) - before_server
        published = [m.message_id for m in batch]
    print(f"claim of {k}: PostgreSQL {server / rounds * 1e6:.0f} µs of CPU per claim", flush=True)
    return spent / rounds


async def _main(args: argparse.Namespace) -> None:
    from benchmarks.persisted import build_persisted
    from benchmarks.pg import database
    from benchmarks.rabbitmq import broker
    from cqrs_ddd_core.adapters.sqlalchemy import create_engine

    configure_filtered()
    async with database() as db, broker() as (url, _where):
        engine = create_engine(db.url, pool_size=12)
        try:
            persisted = build_persisted(engine, "prof")
            await _fill(persisted, 200)
            await _analyze(engine)
            for case in args.cases:
                for repeat in range(args.repeat):
                    profile = cProfile.Profile(time.process_time) if args.profile else None
                    if case == "claim":
                        spent = await _claims(
                            persisted, db.name, args.messages, args.rounds, profile
                        )
                    elif case in ("relay", "raw"):
                        spent = await _relay(persisted, url, args.messages, case == "raw", profile)
                    elif case == "consumer":
                        spent = await _consumer(persisted, db.url, url, args.messages, profile)
                    else:
                        spent = await _sender(persisted, args.messages, profile)
                    unit = "claim" if case == "claim" else "message"
                    per = spent * 1e6 / (1 if case == "claim" else args.messages)
                    print(f"{case} #{repeat + 1}: {per:.0f} µs of CPU per {unit}", flush=True)
                    if profile is not None:
                        stats = pstats.Stats(profile)
                        stats.sort_stats("tottime").print_stats(args.top)
                        stats.sort_stats("cumulative").print_stats(args.top)
        finally:
            await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_messaging")
    parser.add_argument("cases", nargs="+", choices=("relay", "raw", "consumer", "sender", "claim"))
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=300, help="claims in the claim case")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--profile", action="store_true", help="under cProfile, print the top")
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
