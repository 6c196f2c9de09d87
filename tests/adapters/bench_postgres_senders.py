"""PostgreSQL: commit latency and how throughput grows with concurrent senders.

Each command writes one event, one outbox message and one new aggregate's
state row through ``SQLAlchemyUnitOfWork`` (one statement, one round trip).
The server is a throwaway cluster with durable settings (fsync on,
``synchronous_commit = on``), or the one ``CQRS_TEST_POSTGRES_URL`` names.

Run it::

    .venv/bin/python -m tests.adapters.bench_postgres_senders [--seconds 5] [--senders 1 4 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid

from cqrs_ddd_core.adapters.sqlalchemy import (
    SQLAlchemyEventStore,
    SQLAlchemyOutboxStore,
    SQLAlchemyStateRepository,
    SQLAlchemyUnitOfWork,
    create_engine,
    create_tables,
    drop_tables,
)
from cqrs_ddd_core.persistence import OutboxMessage
from tests.support.accounts import Account
from tests.support.postgres import PostgresServer, find_bindir


async def run(url: str, senders: int, seconds: float) -> tuple[float, float]:
    """Commands per second and the median commit latency (seconds)."""
    engine = create_engine(url, pool_size=max(senders, 5))
    events = SQLAlchemyEventStore(engine)
    outbox = SQLAlchemyOutboxStore(engine)
    accounts = SQLAlchemyStateRepository(Account, engine)
    factory = SQLAlchemyUnitOfWork.factory(engine)
    latencies: list[float] = []
    deadline = 0.0

    async def sender() -> int:
        done = 0
        while time.perf_counter() < deadline:
            uow = factory()
            account = Account.open(str(uuid.uuid4()), "ann")
            (event,) = account.collect_events()
            await events.append("Account", account.id, [event], expected_version=0, uow=uow)
            await outbox.enqueue(
                [OutboxMessage(event.event_id, "Opened", event.payload(), event.occurred_at)],
                uow=uow,
            )
            accounts.save(account, uow=uow)
            start = time.perf_counter()
            await uow.commit()
            latencies.append(time.perf_counter() - start)
            done += 1
        return done

    deadline = time.perf_counter() + 0.5  # warm up: connections, prepared statements
    await asyncio.gather(*(sender() for _ in range(senders)))
    latencies.clear()
    start = time.perf_counter()
    deadline = start + seconds
    total = sum(await asyncio.gather(*(sender() for _ in range(senders))))
    elapsed = time.perf_counter() - start
    await engine.dispose()
    return total / elapsed, statistics.median(latencies)


async def prepare(url: str) -> None:
    engine = create_engine(url)
    await drop_tables(engine)
    await create_tables(engine)
    await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--senders", type=int, nargs="+", default=[1, 4, 16])
    args = parser.parse_args()
    server = None
    url = os.environ.get("CQRS_TEST_POSTGRES_URL")
    if not url:
        bindir = find_bindir()
        if bindir is None:
            raise SystemExit("no PostgreSQL binaries and no CQRS_TEST_POSTGRES_URL")
        server = PostgresServer(bindir, durable=True).start()
        url = server.url
    try:
        asyncio.run(prepare(url))
        results = {n: asyncio.run(run(url, n, args.seconds)) for n in args.senders}
    finally:
        if server is not None:
            server.stop()
    base = results[args.senders[0]][0]
    print("PostgreSQL (durable), 1 event + 1 outbox message + 1 state row per command")
    for senders, (rate, latency) in results.items():
        print(
            f"  {senders:3d} senders  {rate:8.0f} commands/s  x{rate / base:4.1f}"
            f"  median commit {latency * 1e6:7.0f} us"
        )


if __name__ == "__main__":
    main()
