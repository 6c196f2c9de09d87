"""Profile workload 3's SDK-on side: ``python -m benchmarks.profile_observability``.

Sends ``N`` commands (default 2,000) one after the other through workload 3's
persisted command (SQLite, WAL + FULL unless ``--synchronous NORMAL``) with
the SDK on as workload 3 sets it up (batch spans over a discarding exporter,
the Prometheus reader, one JSON log line per command), under ``cProfile``, and
prints the top entries by internal and by cumulative time. ``--off`` profiles
the SDK-off side instead; ``--spans`` sets ``persistence_spans``.
``cProfile`` sees the event loop's thread only: the writer thread's SQL and
fsync show up as the time the loop waits for it, and the batch processor's
thread as slower Python everywhere else (both take the GIL).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import tempfile
import time

from benchmarks.logs import configure_filtered, configure_json
from benchmarks.persisted import build_persisted
from benchmarks.telemetry import sdk_on
from benchmarks.workloads.observability import pipeline_listing


async def _main(args: argparse.Namespace, workdir: str) -> None:
    from cqrs_ddd_core.adapters.sqlalchemy import create_engine, create_tables

    telemetry, _exporter, _registry = sdk_on()
    engine = create_engine(
        f"sqlite:///{os.path.join(workdir, 'profile.sqlite3')}",
        sqlite_synchronous=args.synchronous,
    )
    await create_tables(engine)
    try:
        on = not args.off
        listing = pipeline_listing(
            tracer_provider=telemetry.tracer_provider if on else None,
            meter_provider=telemetry.meter_provider if on else None,
            logger_name="bench.profile",
            persistence_spans=args.spans,
        )
        (configure_json if on else configure_filtered)()
        run = build_persisted(engine, "prof", middlewares=listing).sender()
        await run(200)  # warm up: connection, prepared plans, caches
        profile = cProfile.Profile()
        started = time.perf_counter()
        profile.enable()
        await run(args.commands)
        profile.disable()
        elapsed = time.perf_counter() - started
    finally:
        await engine.dispose()
        telemetry.shutdown()
    print(
        f"{args.commands} commands, SDK {'off' if args.off else 'on'}, persistence_spans="
        f"{args.spans}, WAL+{args.synchronous}: {elapsed:.2f} s under cProfile "
        f"({elapsed / args.commands * 1e6:.0f} µs per command, profiler overhead included)"
    )
    profile.dump_stats(args.dump) if args.dump else None
    stats = pstats.Stats(profile)
    stats.sort_stats("tottime").print_stats(args.top)
    stats.sort_stats("cumulative").print_stats(args.top)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_observability")
    parser.add_argument("--commands", type=int, default=2000)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--synchronous", choices=("FULL", "NORMAL"), default="FULL")
    parser.add_argument("--spans", choices=("steps", "commit", "none"), default="steps")
    parser.add_argument("--off", action="store_true", help="profile the SDK-off side")
    parser.add_argument("--dump", help="also write the raw profile to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cqrs-profile-") as workdir:
        asyncio.run(_main(args, workdir))


if __name__ == "__main__":
    main()
