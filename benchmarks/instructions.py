"""CPU instructions per persisted command on SQLite, counted by valgrind: immune to load.

On a shared machine, wall and CPU times of the same code swing by more than
the changes worth measuring. The number of instructions a command executes
does not: this counts them with valgrind's ``callgrind`` for the whole
process (the library, Python, SQLite), for two runs of different lengths,
and reports the difference per command (set-up and teardown cancel out)::

    python -m benchmarks.instructions                # NORMAL: all on the loop's thread
    python -m benchmarks.instructions --synchronous FULL
    PYTHONPATH=../before/src python -m benchmarks.instructions   # another tree's library

The command is workload 4's (``benchmarks.persisted``: the default pipeline,
one event, its outbox row and the aggregate's state in one transaction),
sent sequentially. Instructions are not time (a cache miss or an ``fsync``
costs far more than one instruction), so this compares two versions of the
same code path, not the library with a peer. Needs ``valgrind`` on ``PATH``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["instructions", "main"]

_TOTAL = re.compile(r"^summary:\s*(\d+)", re.MULTILINE)


async def _send(count: int, synchronous: str, directory: str) -> None:
    from benchmarks.logs import configure_filtered
    from benchmarks.persisted import build_persisted
    from cqrs_ddd_core.adapters.sqlalchemy import create_engine, create_tables

    configure_filtered()
    engine = create_engine(
        f"sqlite:///{directory}/instructions.sqlite3",
        sqlite_synchronous=synchronous,  # type: ignore[arg-type]
    )
    try:
        await create_tables(engine)
        send = build_persisted(engine, "ir").sender()
        await send(50)  # warm: caches, the writer, the first statements
        await send(count)
    finally:
        await engine.dispose()


def instructions(count: int, synchronous: str) -> int:
    """Instructions the whole process executes warming up then sending ``count`` commands."""
    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory) / "callgrind.out"
        command = [
            *("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"),
            *(sys.executable, "-m", "benchmarks.instructions", "--child", str(count)),
            *("--synchronous", synchronous, "--workdir", directory),
        ]
        subprocess.run(
            command,
            check=True,
            capture_output=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        found = _TOTAL.search(out.read_text(errors="replace"))
        if found is None:
            raise RuntimeError(f"no instruction total in {out}")
        return int(found.group(1))


def main(argv: list[str] | None = None) -> None:
    """Print instructions per command (the difference of a short and a long run)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--synchronous", default="NORMAL", choices=["NORMAL", "FULL"])
    parser.add_argument("--short", type=int, default=100)
    parser.add_argument("--long", type=int, default=400)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        asyncio.run(_send(args.child, args.synchronous, args.workdir))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    short = instructions(args.short, args.synchronous)
    long = instructions(args.long, args.synchronous)
    per_command = (long - short) / (args.long - args.short)
    print(f"{per_command / 1000:.1f}k instructions per command ({args.synchronous})")


if __name__ == "__main__":
    main()
