"""Workload 9: SQLite at WAL + FULL, 16 concurrent senders against eventsourcing's 16 threads.

The persisted command of workload 4 (event + outbox + state in one
transaction) on a SQLite file in WAL mode with ``synchronous=FULL`` (the
durable default of both libraries: every ``COMMIT`` fsyncs the WAL). ``N``
senders each send their share of the slice's commands one after the other,
all ``N`` at once, each command on a new aggregate (no conflicts):

* ours: ``N`` asyncio tasks through ``EventSourcedMediator``'s default
  pipeline (no SDK, logs filtered) over ``create_engine("sqlite:///...")``
  with its defaults. Its commits run on the engine's writer thread; commits
  that arrive while one is being written wait and are then written together,
  each in a savepoint of its own, under one ``COMMIT`` (group commit: one
  fsync for the group).
* eventsourcing: ``N`` threads calling the same ``Application`` (its SQLite
  recorder as workload 4 sets it up, ``synchronous=FULL`` set on each
  connection). Its connection pool hands out one writing connection at a time
  (a writer lock, taken in arrival order), so its threads write one
  transaction, and one fsync, after another; its lock timeout (5 s) is far
  above any wait here, so it needs no settings of its own for threads.
* ours and eventsourcing with one sender, for the scaling ratios.

A slice of an ``N``-sender case gives each sender at least 8 commands, so
that the start and the end of a slice (fewer than ``N`` commands in flight)
weigh little. Every case writes its own file in the scratch directory. Each command is also
timed from call to return on its own task or thread (``benchmarks.latency``),
and the figures give p50 and p99 per case over the timed rounds; after the
rounds, what one 4 KB append + ``fsync`` costs on the scratch directory's
disk is measured too (the floor of one durable commit here).
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

from benchmarks.harness import Case, Config, Target, WorkloadResult, interleave, ratio, summarize
from benchmarks.latency import Latencies, latency_figures
from benchmarks.logs import configure_filtered

NAME = "sqlite_concurrent"
TITLE = "9. SQLite WAL+FULL: 16 concurrent senders vs eventsourcing with 16 threads, vs 1 sender"

SENDERS = 16
SYNC = "FULL"
PER_SENDER = 8  # a slice gives each of the N senders at least this many commands

TARGETS = [
    Target(
        f"sqlite_concurrent_vs_eventsourcing_{SENDERS}",
        f"throughput_vs_eventsourcing_{SENDERS}",
        ">=",
        3.0,
        f"WAL+FULL, {SENDERS} senders: >= 3x eventsourcing's throughput with {SENDERS} threads",
    ),
    Target(
        f"sqlite_concurrent_scaling_{SENDERS}_vs_1",
        f"throughput_{SENDERS}_vs_1",
        ">=",
        2.0,
        f"WAL+FULL: our throughput with {SENDERS} senders >= 2x that with 1 sender",
    ),
]


def _fsync_us(workdir: str, count: int) -> dict[str, float]:
    """What one small append + ``fsync`` costs on the scratch directory's disk (untimed)."""
    path = os.path.join(workdir, "fsync-probe")
    took: list[int] = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(count):
            os.write(fd, b"x" * 4096)
            start = time.perf_counter_ns()
            os.fsync(fd)
            took.append(time.perf_counter_ns() - start)
    finally:
        os.close(fd)
        os.unlink(path)
    took.sort()
    return {
        "p50_us": round(statistics.median(took) / 1000, 1),
        "p99_us": round(took[min(len(took) - 1, int(len(took) * 0.99))] / 1000, 1),
    }


async def run(cfg: Config) -> WorkloadResult:
    from benchmarks.peers.eventsourcing_app import sender as es_sender
    from benchmarks.peers.eventsourcing_app import sqlite_app, sqlite_settings, threaded_sender
    from benchmarks.persisted import build_persisted
    from benchmarks.workloads.sqlite import _pragmas
    from cqrs_ddd_core.adapters.sqlalchemy import create_engine, create_tables
    from cqrs_ddd_core.adapters.sqlalchemy.sqlite_queue import GROUP_LIMIT

    configure_filtered()
    n = SENDERS
    names = ("ours_1", f"ours_{n}", "eventsourcing_1", f"eventsourcing_{n}")
    latencies = {name: Latencies() for name in names}
    closers: list[Any] = []

    def path(name: str) -> str:
        return os.path.join(cfg.workdir, f"{name}.sqlite3")

    try:
        ours: dict[int, Any] = {}
        ours_settings: dict[str, Any] = {}
        for senders in (1, n):
            engine = create_engine(f"sqlite:///{path(f'ours_{senders}')}")
            closers.append(engine.dispose)
            await create_tables(engine)
            ours[senders] = build_persisted(engine, f"ours{senders}")
            ours_settings = await _pragmas(engine)
            if ours_settings["synchronous"] != SYNC or ours_settings["journal_mode"] != "WAL":
                raise RuntimeError(f"our engine runs {ours_settings}, not WAL + {SYNC}")
        es_one = sqlite_app(path("eventsourcing_1"), SYNC)
        es_many = sqlite_app(path(f"eventsourcing_{n}"), SYNC)
        closers += [es_one.close, es_many.close]
        es_run, es_close = threaded_sender(es_many, n, latencies[f"eventsourcing_{n}"])
        closers.append(es_close)
        settings: dict[str, Any] = {
            "senders": n,
            "ours": ours_settings,
            "ours_group_commit_limit": GROUP_LIMIT,
            "eventsourcing": sqlite_settings(es_many),
            "pipeline": ours[1].mediator.pipeline.describe(),
        }

        def case(name: str, label: str, run: Any, min_ops: int) -> Case:
            return Case(name, label, run, min_ops=min_ops, on_timed=latencies[name].reset)

        cases = [
            case(
                "ours_1",
                "ours: 1 sender, EventSourcedMediator default",
                ours[1].concurrent_sender(1, latencies["ours_1"]),
                5,
            ),
            case(
                f"ours_{n}",
                f"ours: {n} senders (asyncio tasks), group commit",
                ours[n].concurrent_sender(n, latencies[f"ours_{n}"]),
                n * PER_SENDER,
            ),
            case(
                "eventsourcing_1",
                "eventsourcing Application: 1 sender",
                es_sender(es_one, latencies["eventsourcing_1"]),
                5,
            ),
            case(
                f"eventsourcing_{n}",
                f"eventsourcing Application: {n} threads",
                es_run,
                n * PER_SENDER,
            ),
        ]
        stats = await interleave(cases, cfg, io=True)
    finally:
        for close in reversed(closers):
            done = close()
            if done is not None:
                await done
    result = WorkloadResult(NAME, TITLE, cases=stats, settings=settings)
    result.ratios = [
        ratio(
            stats,
            f"throughput_vs_eventsourcing_{n}",
            f"eventsourcing_{n}",
            f"ours_{n}",
            f"{n} senders: our throughput / eventsourcing's ({n} threads)",
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
            f"eventsourcing_{n}_vs_1",
            "eventsourcing_1",
            f"eventsourcing_{n}",
            f"eventsourcing throughput at {n} threads / at 1",
        ),
    ]
    result.figures = {
        "latency": latency_figures([(name, latencies[name]) for name in names]),
        "fsync_4k_append": _fsync_us(cfg.workdir, 20 if cfg.quick else 200),
    }
    result.notes.append(
        "eventsourcing writes one row per command (its event, which is also its notification "
        "log); ours writes three (event, outbox, state)"
    )
    result.notes.append(
        "latency: each command timed from call to return on its own task or thread, over the "
        "timed rounds (p50/p99/max in µs)"
    )
    return summarize(result, TARGETS)
