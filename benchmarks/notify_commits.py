"""Commits per second of concurrent writers on PostgreSQL: does NOTIFY serialise them?

``python -m benchmarks.notify_commits [--seconds 10] [--rounds 3]``

On a durable throwaway cluster (``benchmarks.pg``: fsync and synchronous_commit
on; or ``CQRS_BENCH_POSTGRES_URL``), for ``--seconds`` each, alternating:

* ``raw notify`` / ``raw plain``: 8 asyncpg connections in one process, each
  committing ``INSERT`` transactions one after the other, with a
  ``pg_notify`` in the transaction or without (the SQL-level measurement
  behind docs/benchmarks.md, workload 5);
* ``library 8 processes``: 8 processes, one engine and one sender each, each
  commit one event and one outbox row through ``SQLAlchemyUnitOfWork``
  (separate writers: group commit cannot share their transactions);
* ``library 8 senders``: one process, 8 senders on one engine with group
  commit off (``postgres_commit_batch=1``: one transaction per commit).

The library is whichever ``cqrs_ddd_core`` is imported (``PYTHONPATH``
picks the tree); its tables are made by that tree's ``create_tables``, so
with a tree whose schema has the notification triggers the library's
commits notify from inside their transactions. Prints one JSON line per
measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

WRITERS = 8


async def _raw(url: str, seconds: float, notify: bool) -> float:
    import asyncpg

    conns = [await asyncpg.connect(url) for _ in range(WRITERS)]
    try:
        await conns[0].execute(
            "CREATE TABLE IF NOT EXISTS bench_notify (id bigserial PRIMARY KEY, v text)"
        )
        sql = "INSERT INTO bench_notify (v) VALUES ('x')"
        done = 0
        deadline = time.monotonic() + seconds

        async def writer(conn: Any) -> None:
            nonlocal done
            while time.monotonic() < deadline:
                async with conn.transaction():
                    await conn.execute(sql)
                    if notify:
                        await conn.execute("SELECT pg_notify('bench_notify', '')")
                done += 1

        started = time.monotonic()
        await asyncio.gather(*(writer(c) for c in conns))
        return done / (time.monotonic() - started)
    finally:
        for conn in conns:
            await conn.close()


async def _library_senders(url: str, start: float, until: float, senders: int, batch: int) -> int:
    from cqrs_ddd_core.adapters.sqlalchemy import (
        SQLAlchemyEventStore,
        SQLAlchemyOutboxStore,
        SQLAlchemyUnitOfWork,
        create_engine,
    )
    from cqrs_ddd_core.persistence.records import OutboxMessage
    from tests.support.accounts import Opened

    engine = create_engine(url, postgres_commit_batch=batch, pool_size=senders + 1)
    store, outbox = SQLAlchemyEventStore(engine), SQLAlchemyOutboxStore(engine)
    done = 0

    async def sender() -> None:
        nonlocal done
        while time.time() < until:
            account = uuid.uuid4().hex
            uow = SQLAlchemyUnitOfWork(engine)
            event = Opened(owner=account)
            await store.append("Account", account, [event], expected_version=0, uow=uow)
            message = OutboxMessage(
                message_id=event.event_id,
                message_type="Opened",
                payload={"owner": account},
                created_at=datetime.now(UTC),
            )
            await outbox.enqueue([message], uow=uow)
            await uow.commit()
            done += 1

    try:
        async with engine.connect():  # one connection opened before the clock starts
            pass
        await asyncio.sleep(max(0.0, start - time.time()))
        await asyncio.gather(*(sender() for _ in range(senders)))
    finally:
        await engine.dispose()
    return done


def _worker(url: str, start: float, seconds: float) -> None:
    async def main() -> int:
        return await _library_senders(url, start, start + seconds, 1, 1)

    print(asyncio.run(main()))


def _processes(url: str, seconds: float) -> float:
    start = time.time() + 15.0  # every process imported and connected by then
    argv = [sys.executable, "-m", "benchmarks.notify_commits", "--worker", url, str(start)]
    procs = [
        subprocess.Popen([*argv, str(seconds)], stdout=subprocess.PIPE, text=True)
        for _ in range(WRITERS)
    ]
    total = 0
    for proc in procs:
        out, _ = proc.communicate(timeout=seconds + 120)
        if proc.returncode != 0:
            raise RuntimeError(f"a writer process failed ({proc.returncode})")
        total += int(out.strip().splitlines()[-1])
    return total / seconds


async def _one_process(url: str, seconds: float) -> float:
    start = time.time()
    done = await _library_senders(url, start, start + seconds, WRITERS, 1)
    return done / (time.time() - start)


async def _triggers(url: str) -> list[str]:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal "
            "AND tgrelid IN ('events'::regclass, 'outbox'::regclass) ORDER BY tgname"
        )
        return [row["tgname"] for row in rows]
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.notify_commits")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        url, start, seconds = args.worker
        _worker(url, float(start), float(seconds))
        return 0

    async def measure() -> None:
        import cqrs_ddd_core
        from benchmarks.pg import database

        async with database() as db:
            tree = os.path.dirname(os.path.dirname(os.path.dirname(cqrs_ddd_core.__file__)))
            print(json.dumps({"tree": tree, "triggers": await _triggers(db.url)}), flush=True)
            for round_ in range(args.rounds):
                for name, figure in (
                    ("raw notify", lambda: _raw(db.url, args.seconds, True)),
                    ("raw plain", lambda: _raw(db.url, args.seconds, False)),
                    ("library 8 senders", lambda: _one_process(db.url, args.seconds)),
                    (
                        "library 8 processes",
                        lambda: asyncio.to_thread(_processes, db.url, args.seconds),
                    ),
                ):
                    rate = await figure()
                    line = {"round": round_, "what": name, "commits_per_s": round(rate)}
                    print(json.dumps(line), flush=True)

    asyncio.run(measure())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
