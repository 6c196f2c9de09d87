"""The cost of one wake-up round (``postgres_notify``), tree against tree.

``python -m benchmarks.notify_rounds [--rounds 3] [--count 3000] [--instructions] TREE [TREE...]``

A process of its own per run, with ``PYTHONPATH=TREE`` (a ``src`` directory:
the library under test), makes an engine (``create_engine``, pool of 12) on
a throwaway durable cluster with ``pg_stat_statements`` (as
``benchmarks.relay_cpu`` does) and, with one asyncpg connection listening on
both channels (as a relay and a projection runner would), sends ``--count``
rounds one after the other: ``CommitNotifier.committed(events=True,
outbox=True)``, then waits for the round's task (its notification heard).
Only the rounds run: no command, no commit, so what a round costs is all
that changes between two trees. The trees alternate within each round of
runs.

Timed (the default) it prints, per wake-up round, the CPU of the sending
process (the listener included) and of PostgreSQL (the server and its
backends, ``/proc``), of the backend that sent the notifications if one
did them all (a kept connection), and the server's statements. ``--instructions``
counts instead, under valgrind's callgrind, the instructions of the sending
process per round (a short and a long run, the difference per round:
start-up cancels out); the load of the machine does not change them.
``--plain`` runs on the cluster ``benchmarks.pg`` starts (as the latency
runs do), without ``pg_stat_statements``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
from pathlib import Path
from typing import Any

_ROOT = str(Path(__file__).resolve().parent.parent)
_WARM = 50
_STATEMENTS = """
SELECT s.query, s.calls, s.total_exec_time + s.total_plan_time AS total_exec_time
FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
WHERE d.datname = current_database() ORDER BY s.calls DESC
"""


async def _child(args: argparse.Namespace) -> None:
    import asyncpg

    from benchmarks import proc_cpu
    from benchmarks.pg import _admin
    from cqrs_ddd_core.adapters.sqlalchemy import create_engine
    from cqrs_ddd_core.adapters.sqlalchemy.postgres_notify import NOTIFY_TASK_NAME, notifier_for

    engine = create_engine(args.url, pool_size=12)
    heard = [0]
    senders: set[int] = set()
    changed = asyncio.Event()

    def on_notify(_conn: object, pid: int, *_: object) -> None:
        heard[0] += 1
        senders.add(pid)
        changed.set()

    listener = await asyncpg.connect(args.url)
    await listener.add_listener("cqrs_events", on_notify)
    await listener.add_listener("cqrs_outbox", on_notify)
    notifier = notifier_for(engine)

    async def rounds(n: int) -> None:
        for _ in range(n):
            want = heard[0] + 2
            notifier.committed(engine, events=True, outbox=True)
            for task in [t for t in asyncio.all_tasks() if t.get_name() == NOTIFY_TASK_NAME]:
                await task
            while heard[0] < want:
                changed.clear()
                await asyncio.wait_for(changed.wait(), 10)

    try:
        await rounds(_WARM)
        if args.count_only:
            await rounds(args.count)
            assert notifier.failures == 0
            return
        server = proc_cpu.listener_tree(args.port)
        if not args.plain:
            await _admin(args.url, "SELECT pg_stat_statements_reset()")
        senders.clear()
        await rounds(1)
        (backend,) = senders if len(senders) == 1 else (0,)  # the one that notified, if kept
        before = (proc_cpu.self_cpu(), server() if server is not None else 0.0)
        notifier_cpu = proc_cpu.process_cpu(backend) if backend else None
        await rounds(args.count)
        after = (proc_cpu.self_cpu(), server() if server is not None else 0.0)
        notifier_after = proc_cpu.process_cpu(backend) if backend else None
        one_backend = len(senders) == 1
        statements = [] if args.plain else await _admin(args.url, _STATEMENTS)
        assert notifier.failures == 0
    finally:
        await listener.close()
        await engine.dispose()
    n = args.count
    print(
        json.dumps(
            {
                "sender_us_per_round": round((after[0] - before[0]) * 1e6 / n, 1),
                "postgres_us_per_round": round((after[1] - before[1]) * 1e6 / n, 1),
                # The backend that sent them, when one did (a kept connection).
                "notify_backend_us_per_round": (
                    round((notifier_after - notifier_cpu) * 1e6 / n, 1)
                    if one_backend and notifier_cpu is not None and notifier_after is not None
                    else None
                ),
                "statements": {
                    " ".join(r["query"].split())[:70]: (
                        round(r["calls"] / n, 3),
                        round(r["total_exec_time"] * 1000 / max(r["calls"], 1), 1),
                    )
                    for r in statements
                },
            }
        ),
        flush=True,
    )


def _env(tree: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{_ROOT}"}


async def _main(args: argparse.Namespace) -> None:
    from benchmarks.pg import _admin, database
    from benchmarks.relay_cpu import _cluster
    from benchmarks.sender_cpu import child_result, counted

    with contextlib.nullcontext() if args.plain else _cluster():
        async with database() as db:
            if not args.plain:
                await _admin(db.url, "CREATE EXTENSION pg_stat_statements")
            child = ["benchmarks.notify_rounds", "--child", f"--url={db.url}", f"--port={db.port}"]
            child += ["--plain"] if args.plain else []
            for r in range(args.rounds):
                for tree in args.trees if r % 2 == 0 else args.trees[::-1]:
                    if args.instructions:
                        counts = [
                            await counted(
                                _env(tree), [*child, "--count-only", f"--count={n}", "--workdir"]
                            )
                            for n in (args.short, args.long)
                        ]
                        per = (counts[1] - counts[0]) / (args.long - args.short)
                        result: dict[str, Any] = {"instructions_per_round": round(per)}
                    else:
                        result = await child_result([*child, f"--count={args.count}"], _env(tree))
                    print(json.dumps({"round": r + 1, "tree": tree, **result}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.notify_rounds")
    parser.add_argument("trees", nargs="*", help="src directories (PYTHONPATH of the sender)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=3000, help="wake-up rounds per timed run")
    parser.add_argument("--instructions", action="store_true", help="count under callgrind")
    parser.add_argument("--short", type=int, default=100)
    parser.add_argument("--long", type=int, default=400)
    parser.add_argument(
        "--plain",
        action="store_true",
        help="the suite's durable cluster without pg_stat_statements (no statements listed)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--count-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(_child(args))
        return
    if not args.trees:
        parser.error("name at least one tree")
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
