"""Workload 10: PostgreSQL with 64 concurrent senders, ours against raw asyncpg.

Workload 5 at four times its concurrency, with the same senders and the same
durable throwaway cluster: 64 asyncio tasks each send their share of the
slice's commands one after the other, each command on a new aggregate. Ours
runs with the engine's defaults (group commit included) and a pool of 66
connections (``pool_size`` at least the number of commands in flight, as
``docs/persistence.md`` advises); raw asyncpg does the same writes as in
workload 5 (``BEGIN``, three ``INSERT`` s, ``COMMIT``: five round trips) on a
pool of 64 connections. A slice gives each sender at least 8 commands (512
per slice), so that the ramp at its start and end weighs little. No ratio
target: the issue asks for the figures (throughput, and p50/p99 per command
timed from call to return), and the reader check of workload 5 is repeated
with 64 senders writing.
"""

from __future__ import annotations

from typing import Any

from benchmarks.harness import Case, Config, Target, WorkloadResult, interleave, ratio, summarize
from benchmarks.latency import Latencies, latency_figures
from benchmarks.logs import configure_filtered
from benchmarks.workloads.postgres import _reader_check

NAME = "postgres_64"
TITLE = "10. PostgreSQL: 64 concurrent senders, ours vs raw asyncpg"

SENDERS = 64
PER_SENDER = 8  # a slice gives each sender at least this many commands

TARGETS = [
    Target(
        "postgres_64_reader_no_gap",
        "reader_violations",
        "<=",
        0,
        f"{SENDERS} senders: a concurrent reader by global position sees no gap and "
        "nothing out of order",
    ),
]


async def run(cfg: Config) -> WorkloadResult:
    import asyncpg

    from benchmarks.baselines.raw_sql import asyncpg_sender
    from benchmarks.persisted import build_persisted
    from benchmarks.pg import database, server_settings
    from cqrs_ddd_core.adapters.sqlalchemy import create_engine
    from cqrs_ddd_core.adapters.sqlalchemy.postgres_group import describe as describe_group_commit

    configure_filtered()
    n = SENDERS
    ours_lat, raw_lat = Latencies(), Latencies()
    async with database() as db:
        settings: dict[str, Any] = {"server": db.server, **await server_settings(db.url)}
        engine = create_engine(db.url, pool_size=n + 2)
        settings["group_commit"] = describe_group_commit(engine)
        settings["senders"] = n
        pool = await asyncpg.create_pool(
            host=db.host,
            port=db.port,
            user=db.user,
            password=db.password or None,
            database=db.name,
            min_size=n,
            max_size=n,
        )
        try:
            ours = build_persisted(engine, "pg64")
            settings["pipeline"] = ours.mediator.pipeline.describe()
            cases = [
                Case(
                    f"ours_{n}",
                    f"ours: {n} senders (tasks), group commit",
                    ours.concurrent_sender(n, ours_lat),
                    min_ops=n * PER_SENDER,
                    on_timed=ours_lat.reset,
                ),
                Case(
                    f"asyncpg_{n}",
                    f"raw asyncpg: {n} senders, 5 round trips each",
                    asyncpg_sender(pool, "raw64", senders=n, latencies=raw_lat),
                    min_ops=n * PER_SENDER,
                    on_timed=raw_lat.reset,
                ),
            ]
            stats = await interleave(cases, cfg, io=True)
            check = await _reader_check(ours, 320 if cfg.quick else 6000, senders=n)
        finally:
            await pool.close()
            await engine.dispose()
    result = WorkloadResult(NAME, TITLE, cases=stats, settings=settings)
    result.ratios = [
        ratio(
            stats,
            f"throughput_vs_asyncpg_{n}",
            f"asyncpg_{n}",
            f"ours_{n}",
            f"{n} senders: our throughput / raw asyncpg's",
        ),
    ]
    figures = latency_figures([(f"ours_{n}", ours_lat), (f"asyncpg_{n}", raw_lat)])
    result.figures = {
        "latency": figures,
        "reader_violations": check["violations"],
        "reader_check": check,
    }
    result.notes.append(
        "latency: each command timed from call to return on its own task, over the timed "
        "rounds (p50/p99/max in µs); no target, reported as the issue asks"
    )
    return summarize(result, TARGETS)
