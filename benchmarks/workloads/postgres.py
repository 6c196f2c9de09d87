"""Workload 5: PostgreSQL, 1 and 16 concurrent senders on distinct aggregates.

The persisted command of workload 4 (event + outbox + state) against a durable
PostgreSQL (fsync and synchronous_commit on). ``N`` senders each send their
share of the slice's commands one after the other, all ``N`` at once: asyncio
tasks for ours and raw asyncpg (one pooled connection each), threads for
eventsourcing (psycopg 3, one pooled connection each). Every command creates
a new aggregate, so senders never conflict. Ours runs with the engine's
defaults, group commit included (commits made at the same time share one
statement; the settings are reported).

Baselines: raw asyncpg (``BEGIN``, three ``INSERT`` s, ``COMMIT``: five round
trips), and raw asyncpg that also takes a transaction-scoped advisory lock
right before ``COMMIT``, held through the commit: the design the library's
PostgreSQL adapter measured and rejected (it holds its lock only around the
event inserts and orders readers by transaction id instead), kept to show
what serialising commits would cost by itself.

Then, outside the timings, a reader follows the event table by global
position (``read_all(after_position=...)``) while 16 senders write, and the
positions it saw are checked against the table: nothing skipped (a position
that committed later below one already read) and nothing out of order.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from benchmarks.harness import Case, Config, Target, WorkloadResult, interleave, ratio, summarize
from benchmarks.latency import Latencies
from benchmarks.logs import configure_filtered

NAME = "postgres"
TITLE = "5. PostgreSQL: 1 vs 16 concurrent senders, vs eventsourcing and raw asyncpg"

SENDERS = 16

TARGETS = [
    Target(
        "postgres_vs_eventsourcing_16",
        "throughput_vs_eventsourcing_16",
        ">=",
        3.0,
        "16 senders: >= 3x eventsourcing's PostgreSQL throughput (16 threads)",
    ),
    Target(
        "postgres_scaling_16_vs_1",
        "throughput_16_vs_1",
        ">=",
        4.0,
        "our throughput with 16 senders >= 4x that with 1 sender",
    ),
    Target(
        "postgres_reader_no_gap",
        "reader_violations",
        "<=",
        0,
        "a concurrent reader by global position sees no gap and nothing out of order",
    ),
]


def _ours_sender(persisted: Any, senders: int, latencies: Latencies | None = None) -> Any:
    return persisted.concurrent_sender(senders, latencies)


async def _reader_check(persisted: Any, commands: int, senders: int = SENDERS) -> dict[str, Any]:
    """Follow positions while ``senders`` senders write; compare with the table afterwards."""
    from cqrs_ddd_core.adapters.sqlalchemy import SQLAlchemyEventStore

    store = SQLAlchemyEventStore(persisted.engine)
    start = await store.latest_position()
    seen: list[int] = []
    done = asyncio.Event()

    async def follow() -> None:
        last = start
        while True:
            finished = done.is_set()
            batch = await store.read_all(after_position=last, limit=500)
            for event in batch:
                seen.append(event.position)
                last = event.position
            if finished and not batch:
                return
            if not batch:
                await asyncio.sleep(0)

    reader = asyncio.create_task(follow())
    await _ours_sender(persisted, senders)(commands)
    done.set()
    await reader
    everything: list[int] = []
    last = start
    while True:
        batch = await store.read_all(after_position=last, limit=5000)
        if not batch:
            break
        everything += [e.position for e in batch]
        last = batch[-1].position
    out_of_order = sum(1 for a, b in itertools.pairwise(seen) if b <= a)
    skipped = len(set(everything) - set(seen))
    return {
        "commands": commands,
        "senders": senders,
        "events_written": len(everything),
        "events_seen": len(seen),
        "skipped": skipped,
        "out_of_order": out_of_order,
        "violations": skipped + out_of_order,
    }


async def run(cfg: Config) -> WorkloadResult:
    import asyncpg

    from benchmarks.baselines.raw_sql import asyncpg_sender
    from benchmarks.peers.eventsourcing_app import postgres_app, threaded_sender
    from benchmarks.peers.eventsourcing_app import sender as es_sender
    from benchmarks.persisted import build_persisted
    from benchmarks.pg import database, server_settings
    from cqrs_ddd_core.adapters.sqlalchemy import EVENTS_LOCK_KEY, create_engine
    from cqrs_ddd_core.adapters.sqlalchemy.postgres_group import describe as describe_group_commit

    configure_filtered()
    async with database() as db:
        settings: dict[str, Any] = {"server": db.server, **await server_settings(db.url)}
        engine = create_engine(db.url, pool_size=SENDERS + 2)
        settings["group_commit"] = describe_group_commit(engine)
        pool = await asyncpg.create_pool(
            host=db.host,
            port=db.port,
            user=db.user,
            password=db.password or None,
            database=db.name,
            min_size=SENDERS,
            max_size=SENDERS,
        )
        es_app = postgres_app(
            host=db.host,
            port=db.port,
            user=db.user,
            password=db.password,
            dbname=db.name,
            pool_size=SENDERS,
        )
        es_16, es_close = threaded_sender(es_app, SENDERS)
        try:
            ours = build_persisted(engine, "pg")
            settings["pipeline"] = ours.mediator.pipeline.describe()
            cases = [
                Case("ours_1", "ours: 1 sender", _ours_sender(ours, 1), min_ops=5),
                Case(
                    f"ours_{SENDERS}",
                    f"ours: {SENDERS} senders (tasks)",
                    _ours_sender(ours, SENDERS),
                    min_ops=SENDERS,
                ),
                Case("eventsourcing_1", "eventsourcing: 1 sender", es_sender(es_app), min_ops=5),
                Case(
                    f"eventsourcing_{SENDERS}",
                    f"eventsourcing: {SENDERS} threads",
                    es_16,
                    min_ops=SENDERS,
                ),
                Case(
                    "asyncpg_1",
                    "raw asyncpg: 1 sender, 5 round trips",
                    asyncpg_sender(pool, "raw1", senders=1),
                    min_ops=5,
                ),
                Case(
                    f"asyncpg_{SENDERS}",
                    f"raw asyncpg: {SENDERS} senders",
                    asyncpg_sender(pool, "raw16", senders=SENDERS),
                    min_ops=SENDERS,
                ),
                Case(
                    f"asyncpg_{SENDERS}_lock",
                    f"raw asyncpg: {SENDERS} senders + a lock held through COMMIT",
                    asyncpg_sender(pool, "rawlk", senders=SENDERS, lock_key=EVENTS_LOCK_KEY),
                    min_ops=SENDERS,
                ),
            ]
            stats = await interleave(cases, cfg, io=True)
            check = await _reader_check(ours, 200 if cfg.quick else 3000)
        finally:
            es_close()
            await pool.close()
            await engine.dispose()
            es_app.close()
    result = WorkloadResult(NAME, TITLE, cases=stats, settings=settings)
    n = SENDERS
    result.ratios = [
        ratio(
            stats,
            f"throughput_vs_eventsourcing_{n}",
            f"eventsourcing_{n}",
            f"ours_{n}",
            f"{n} senders: our throughput / eventsourcing's",
        ),
        ratio(
            stats,
            f"throughput_{n}_vs_1",
            "ours_1",
            f"ours_{n}",
            f"our throughput at {n} senders / at 1",
        ),
        ratio(
            stats,
            "throughput_vs_eventsourcing_1",
            "eventsourcing_1",
            "ours_1",
            "1 sender: our throughput / eventsourcing's",
        ),
        ratio(
            stats,
            f"throughput_vs_asyncpg_{n}",
            f"asyncpg_{n}",
            f"ours_{n}",
            f"{n} senders: our throughput / raw asyncpg's",
        ),
        ratio(
            stats,
            f"asyncpg_{n}_vs_1",
            "asyncpg_1",
            f"asyncpg_{n}",
            f"raw asyncpg throughput at {n} senders / at 1",
        ),
        ratio(
            stats,
            f"asyncpg_lock_{n}_vs_1",
            "asyncpg_1",
            f"asyncpg_{n}_lock",
            f"raw asyncpg + lock through COMMIT at {n} senders / raw asyncpg at 1",
        ),
        ratio(
            stats,
            f"eventsourcing_{n}_vs_1",
            "eventsourcing_1",
            f"eventsourcing_{n}",
            f"eventsourcing throughput at {n} threads / at 1",
        ),
    ]
    result.figures = {"reader_violations": check["violations"], "reader_check": check}
    return summarize(result, TARGETS)
