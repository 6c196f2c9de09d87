"""Workload 4: a persisted command on a SQLite file, sequential.

One command = one event row, one outbox row, one aggregate state row, in one
transaction. Ours: ``EventSourcedMediator`` with its default pipeline over the
SQLAlchemy adapters (``create_engine("sqlite:///...")``: WAL, and
``synchronous=FULL`` by default), no OpenTelemetry SDK, logs filtered.
Baselines: raw ``sqlite3`` and raw ``aiosqlite`` writing the same rows into
the same tables; peer: eventsourcing's ``Application`` on SQLite. Every case
writes its own file in the scratch directory, and runs at both settings:

* WAL + FULL (our default): each COMMIT fsyncs the WAL; a command that
  returned survives a power loss. eventsourcing's default is the same.
* WAL + NORMAL: the WAL is fsynced at checkpoints only; the file is never
  corrupted, but the last commits before a power loss (not an application
  crash) may be lost.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from benchmarks.harness import Case, Config, Target, WorkloadResult, interleave, ratio, summarize
from benchmarks.logs import configure_filtered

NAME = "sqlite"
TITLE = "4. Persisted command on a SQLite file, sequential (event + outbox + state)"

SETTINGS: tuple[Literal["FULL"], Literal["NORMAL"]] = ("FULL", "NORMAL")

TARGETS = [
    t
    for sync in SETTINGS
    for t in (
        Target(
            f"sqlite_{sync.lower()}_vs_raw_sqlite3",
            f"throughput_vs_raw_sqlite3_{sync.lower()}",
            ">=",
            0.5,
            f"WAL+{sync}: >= 0.5x the throughput of raw sqlite3 (same rows, same settings)",
        ),
        Target(
            f"sqlite_{sync.lower()}_vs_eventsourcing",
            f"throughput_vs_eventsourcing_{sync.lower()}",
            ">=",
            0.8,
            f"WAL+{sync}: >= 0.8x eventsourcing's SQLite throughput (it writes one row, "
            "we write three and run the pipeline)",
        ),
    )
]

DURABILITY = {
    "FULL": "WAL + synchronous=FULL: every commit fsyncs the WAL; nothing committed is lost "
    "on power loss",
    "NORMAL": "WAL + synchronous=NORMAL: fsync at checkpoints only; never corrupt, the last "
    "commits may be lost on power loss (not on an application crash)",
}


async def _pragmas(engine: Any) -> dict[str, str]:
    async with engine.connect() as conn:
        journal = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()
        level = (await conn.exec_driver_sql("PRAGMA synchronous")).scalar()
    names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    return {"journal_mode": str(journal).upper(), "synchronous": names.get(int(level), str(level))}


async def run(cfg: Config) -> WorkloadResult:
    from benchmarks.baselines.raw_sql import aiosqlite_sender, sqlite3_sender
    from benchmarks.peers.eventsourcing_app import sender as es_sender
    from benchmarks.peers.eventsourcing_app import sqlite_app, sqlite_settings
    from benchmarks.persisted import build_persisted
    from cqrs_ddd_core.adapters.sqlalchemy import create_engine, create_tables

    configure_filtered()
    cases: list[Case] = []
    closers: list[Any] = []
    settings: dict[str, Any] = {}

    def path(name: str) -> str:
        return os.path.join(cfg.workdir, f"{name}.sqlite3")

    try:
        for sync in SETTINGS:
            low = sync.lower()
            engine = create_engine(f"sqlite:///{path('ours_' + low)}", sqlite_synchronous=sync)
            closers.append(engine.dispose)
            await create_tables(engine)
            ours = build_persisted(engine, f"ours-{low}")
            app = sqlite_app(path("eventsourcing_" + low), sync)
            aio_run, aio_close = await aiosqlite_sender(path("aiosqlite_" + low), sync, "aio")
            closers.append(aio_close)
            cases += [
                Case(
                    f"ours_{low}",
                    f"ours: EventSourcedMediator default, WAL+{sync}",
                    ours.sender(),
                    min_ops=5,
                ),
                Case(
                    f"raw_sqlite3_{low}",
                    f"raw sqlite3, 3 INSERTs + COMMIT, WAL+{sync}",
                    sqlite3_sender(path("sqlite3_" + low), sync, "raw"),
                    min_ops=5,
                ),
                Case(
                    f"raw_aiosqlite_{low}",
                    f"raw aiosqlite, 5 awaits, WAL+{sync}",
                    aio_run,
                    min_ops=5,
                ),
                Case(
                    f"eventsourcing_{low}",
                    f"eventsourcing Application, WAL+{sync}",
                    es_sender(app),
                    min_ops=5,
                ),
            ]
            ours_settings = await _pragmas(engine)
            settings[low] = {
                "ours": ours_settings,
                "eventsourcing": sqlite_settings(app),
                "raw": {"journal_mode": "WAL", "synchronous": sync},
                "durability": DURABILITY[sync],
            }
            if ours_settings["synchronous"] != sync:
                raise RuntimeError(f"our engine runs synchronous={ours_settings}, not {sync}")
        settings["pipeline"] = ours.mediator.pipeline.describe()
        stats = await interleave(cases, cfg, io=True)
    finally:
        for close in closers:
            await close()
    result = WorkloadResult(NAME, TITLE, cases=stats, settings=settings)
    for sync in SETTINGS:
        low = sync.lower()
        result.ratios += [
            ratio(
                stats,
                f"throughput_vs_raw_sqlite3_{low}",
                f"raw_sqlite3_{low}",
                f"ours_{low}",
                f"WAL+{sync}: our throughput / raw sqlite3's",
            ),
            ratio(
                stats,
                f"throughput_vs_eventsourcing_{low}",
                f"eventsourcing_{low}",
                f"ours_{low}",
                f"WAL+{sync}: our throughput / eventsourcing's",
            ),
            ratio(
                stats,
                f"throughput_vs_raw_aiosqlite_{low}",
                f"raw_aiosqlite_{low}",
                f"ours_{low}",
                f"WAL+{sync}: our throughput / raw aiosqlite's",
            ),
        ]
    result.notes.append(
        "eventsourcing writes one row per command (its event, which is also its notification "
        "log); ours and the raw baselines write three (event, outbox, state)"
    )
    return summarize(result, TARGETS)
