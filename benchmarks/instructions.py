"""CPU instructions per persisted command on SQLite, counted by valgrind: immune to load.

On a shared machine, wall and CPU times of the same code swing by more than
the changes worth measuring. The number of instructions a command executes
does not: this counts them with valgrind's ``callgrind`` for the whole
process (the library, Python, SQLite), for two runs of different lengths,
and reports the difference per command (set-up and teardown cancel out)::

    python -m benchmarks.instructions                # NORMAL: all on the loop's thread
    python -m benchmarks.instructions --synchronous FULL
    PYTHONPATH=../before/src python -m benchmarks.instructions   # another tree's library
    python -m benchmarks.instructions --peers        # eventsourcing and raw sqlite3 too

The command is workload 4's (``benchmarks.persisted``: the default pipeline,
one event, its outbox row and the aggregate's state in one transaction),
sent sequentially. Instructions are not time (a cache miss or an ``fsync``
costs far more than one instruction), so this compares two versions of the
same code path; ``--peers`` counts workload 4's peers the same way (their
code does not change between two trees of ours, so they show what a change
of ours weighs against them). Needs ``valgrind`` on ``PATH``.

It also prints the **WAL pages per command**: the pages a commit appends to
the write-ahead log (each a page-sized write, and at FULL part of the
``fsync``), which instructions do not see. Counted without valgrind, from
``PRAGMA wal_checkpoint`` around a run short enough that no checkpoint runs.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

__all__ = ["CASES", "callgrind", "instructions", "main", "wal_pages"]

_TOTAL = re.compile(r"^(?:summary|totals):\s*(\d+)", re.MULTILINE)


CASES = ("ours", "eventsourcing", "raw_sqlite3")
_WARM = 50
_FRAMES_RUN = 40  # x ~10 pages: below any checkpoint threshold (ours: 1,000 pages)


async def _send(
    count: int,
    synchronous: str,
    directory: str,
    case: str = "ours",
    around: tuple[Callable[[str], None], Callable[[str], None]] | None = None,
) -> None:
    """Warm up, then send ``count`` commands of ``case``; ``around`` = (before, after) are
    called with the database's path right before and right after them."""
    from benchmarks.baselines.raw_sql import sqlite3_sender
    from benchmarks.logs import configure_filtered
    from benchmarks.peers.eventsourcing_app import sender, sqlite_app
    from benchmarks.persisted import build_persisted
    from cqrs_ddd_core.adapters.sqlalchemy import create_engine, create_tables

    path = f"{directory}/instructions.sqlite3"
    configure_filtered()
    close: Callable[[], Awaitable[None]] | None = None
    if case == "ours":
        engine = create_engine(f"sqlite:///{path}", sqlite_synchronous=synchronous)  # type: ignore[arg-type]
        close = engine.dispose
        await create_tables(engine)
        send = build_persisted(engine, "ir").sender()
    elif case == "eventsourcing":
        send = sender(sqlite_app(path, synchronous))
    else:
        send = sqlite3_sender(path, synchronous, "ir")
    try:
        await send(_WARM)  # warm: caches, the writer, the first statements
        if around is not None:
            around[0](path)
        await send(count)
        if around is not None:
            around[1](path)
    finally:
        if close is not None:
            await close()


def wal_pages(synchronous: str, case: str = "ours") -> float:
    """WAL pages appended per command of ``case`` (in this process, no valgrind)."""

    def checkpoint(mode: str) -> Callable[[str], None]:
        def run(path: str) -> None:
            conn = sqlite3.connect(path)
            try:
                busy, log, _ = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
            finally:
                conn.close()
            if busy:
                raise RuntimeError(f"{case}: the WAL could not be checkpointed")
            frames.append(int(log))

        return run

    frames: list[int] = []
    with tempfile.TemporaryDirectory() as directory:
        around = (checkpoint("TRUNCATE"), checkpoint("PASSIVE"))
        asyncio.run(_send(_FRAMES_RUN, synchronous, directory, case, around))
    if frames[-1] <= 0:
        raise RuntimeError(f"{case}: no WAL frames counted")
    return frames[-1] / _FRAMES_RUN


def callgrind(child: list[str], *, main_thread: bool = False) -> int:
    """Instructions that ``python -m <child...>`` executes under callgrind: the whole
    process, or (``main_thread``) its main thread alone. The child gets a work
    directory as its last argument."""
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory) / "callgrind.out"
        command = [
            *("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"),
            *(("--separate-threads=yes",) if main_thread else ()),
            *(sys.executable, "-m", *child, directory),
        ]
        subprocess.run(
            command,
            check=True,
            capture_output=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        # One file per thread with --separate-threads (``-01`` is the main thread's).
        (result,) = glob.glob(f"{out}*-01") if main_thread else [str(out)]
        found = _TOTAL.search(Path(result).read_text(errors="replace"))
        if found is None:
            raise RuntimeError(f"no instruction total in {result}")
        return int(found.group(1))


def instructions(count: int, synchronous: str, case: str = "ours") -> int:
    """Instructions the whole process executes warming up then sending ``count`` commands."""
    return callgrind(
        [
            *("benchmarks.instructions", "--child", str(count)),
            *("--synchronous", synchronous, "--case", case, "--workdir"),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    """Print instructions per command (the difference of a short and a long run)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--synchronous", default="NORMAL", choices=["NORMAL", "FULL"])
    parser.add_argument("--short", type=int, default=100)
    parser.add_argument("--long", type=int, default=400)
    parser.add_argument(
        "--peers", action="store_true", help="count eventsourcing and raw sqlite3 as well"
    )
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--case", default="ours", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        asyncio.run(_send(args.child, args.synchronous, args.workdir, args.case))
        return
    per_command: dict[str, float] = {}
    for case in CASES if args.peers else CASES[:1]:
        short = instructions(args.short, args.synchronous, case)
        long = instructions(args.long, args.synchronous, case)
        per_command[case] = (long - short) / (args.long - args.short)
        pages = wal_pages(args.synchronous, case)
        print(
            f"{per_command[case] / 1000:.1f}k instructions per command ({args.synchronous})"
            + ("" if case == "ours" else f" {case}")
            + f", {pages:.2f} WAL pages per command"
        )
    for case in CASES[1:] if args.peers else ():
        print(f"ours / {case}: {per_command['ours'] / per_command[case]:.2f}x the instructions")


if __name__ == "__main__":
    main()
