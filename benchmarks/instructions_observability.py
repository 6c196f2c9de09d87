"""Main-thread instructions per persisted command with telemetry parts on, counted by callgrind.

Workload 3's command (SQLite, WAL + FULL, ``benchmarks.persisted``) with the
SDK set up as workload 3 does (batch spans over a discarding exporter, the
Prometheus reader, structlog JSON lines with trace ids), switching on one
part at a time::

    python -m benchmarks.instructions_observability                  # off,all,trace,metrics,logs
    python -m benchmarks.instructions_observability --cases off,all --spans steps
    PYTHONPATH=../before/src python -m benchmarks.instructions_observability  # another tree

Each case runs twice under ``valgrind --tool=callgrind --separate-threads=yes``
(``--short`` and ``--long`` commands after a warm-up); the difference per
command of the *main thread's* instructions (the event loop's, where all
telemetry runs; the SQLite writer and the batch span processor have threads
of their own) is printed. Unlike times, these do not move with the machine's
load; they still move by about 2 % between runs of the same code (how many
event-loop iterations a command takes depends on when the writer thread
answers, and a garbage collection may fall in one run and not the other), so
a difference smaller than that means nothing. Needs ``valgrind`` on ``PATH``;
each case takes minutes.
"""

from __future__ import annotations

import argparse
import asyncio

from benchmarks.instructions import callgrind

__all__ = ["CASES", "main", "main_thread_instructions"]

CASES: dict[str, tuple[bool, bool, bool]] = {
    # name: (tracer provider, meter provider, JSON log line)
    "off": (False, False, False),
    "all": (True, True, True),
    "trace": (True, False, False),
    "metrics": (False, True, False),
    "logs": (False, False, True),
}


async def _send(case: str, count: int, spans: str, directory: str) -> None:
    from benchmarks.logs import configure_filtered, configure_json
    from benchmarks.persisted import build_persisted
    from benchmarks.telemetry import sdk_on
    from benchmarks.workloads.observability import pipeline_listing
    from cqrs_ddd_core.adapters.sqlalchemy import create_engine, create_tables

    traced, metered, logged = CASES[case]
    telemetry, _exporter, _registry = sdk_on()
    engine = create_engine(f"sqlite:///{directory}/instructions.sqlite3", sqlite_synchronous="FULL")
    try:
        await create_tables(engine)
        listing = pipeline_listing(
            tracer_provider=telemetry.tracer_provider if traced else None,
            meter_provider=telemetry.meter_provider if metered else None,
            logger_name="bench.instructions",
            persistence_spans=spans,
        )
        (configure_json if logged else configure_filtered)()
        send = build_persisted(engine, "ir", middlewares=listing).sender()
        await send(50)  # warm: caches, the writer, the first statements
        await send(count)
    finally:
        await engine.dispose()
        telemetry.shutdown()


def main_thread_instructions(case: str, count: int, spans: str) -> int:
    """Instructions of the main thread warming up, then sending ``count`` commands."""
    return callgrind(
        [
            *("benchmarks.instructions_observability", "--child", case),
            *("--count", str(count), "--spans", spans, "--workdir"),
        ],
        main_thread=True,
    )


def main(argv: list[str] | None = None) -> None:
    """Print main-thread instructions per command for each case."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--spans", default="commit", choices=["steps", "commit", "events", "none"])
    parser.add_argument("--short", type=int, default=30)
    parser.add_argument("--long", type=int, default=130)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        asyncio.run(_send(args.child, args.count, args.spans, args.workdir))
        return
    for case in args.cases.split(","):
        if case not in CASES:
            raise SystemExit(f"unknown case {case!r}: one of {', '.join(CASES)}")
        short = main_thread_instructions(case, args.short, args.spans)
        long = main_thread_instructions(case, args.long, args.spans)
        per_command = (long - short) / (args.long - args.short)
        print(
            f"{case:8s} {args.spans:7s} {per_command / 1000:8.1f}k"
            " main-thread instructions per command"
        )


if __name__ == "__main__":
    main()
