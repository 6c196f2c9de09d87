"""Profile our side of workloads 4 and 9: ``python -m benchmarks.profile_concurrent``.

Sends ``N`` commands (``--commands``, default 3,000) with ``--senders``
concurrent senders (default 16: workload 9; ``--senders 1``: workload 4)
through the same persisted command (``EventSourcedMediator`` default
pipeline, SQLite WAL + ``--synchronous`` (default FULL), logs filtered)
under ``cProfile`` and prints the
top entries by internal and by cumulative time. ``cProfile`` sees the event
loop's thread only: the writer thread's SQL and fsync show up as the time
the loop waits for it (``select``/``epoll``), and the GIL it takes from the
loop as slower Python everywhere else.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import tempfile
import time

from benchmarks.logs import configure_filtered
from benchmarks.persisted import build_persisted

SENDERS = 16


async def _main(
    commands: int, workdir: str, top: int, senders: int = SENDERS, synchronous: str = "FULL"
) -> None:
    from cqrs_ddd_core.adapters.sqlalchemy import create_engine, create_tables

    configure_filtered()
    engine = create_engine(
        f"sqlite:///{os.path.join(workdir, 'profile.sqlite3')}", sqlite_synchronous=synchronous
    )
    await create_tables(engine)
    try:
        persisted = build_persisted(engine, "prof")
        run = persisted.concurrent_sender(senders)
        await run(max(senders * 20, 200))  # warm up: connection, prepared plans, caches
        profile = cProfile.Profile()
        started = time.perf_counter()
        profile.enable()
        await run(commands)
        profile.disable()
        elapsed = time.perf_counter() - started
    finally:
        await engine.dispose()
    print(
        f"{commands} commands, {senders} senders, WAL+{synchronous}: "
        f"{elapsed:.2f} s under cProfile "
        f"({elapsed / commands * 1e6:.0f} µs per command, profiler overhead included)"
    )
    stats = pstats.Stats(profile)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_concurrent")
    parser.add_argument("--commands", type=int, default=3000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--senders", type=int, default=SENDERS)
    parser.add_argument("--synchronous", choices=("FULL", "NORMAL"), default="FULL")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cqrs-profile-") as workdir:
        asyncio.run(_main(args.commands, workdir, args.top, args.senders, args.synchronous))


if __name__ == "__main__":
    main()
