"""The sender's CPU and PostgreSQL's per command at a steady rate, tree against tree.

``python -m benchmarks.sender_cpu [--rate 500] [--seconds 6] [--rounds 3] TREE [TREE...]``

Workload 8's sender without the relay and the consumer (the outbox just
fills): the persisted command (``benchmarks.persisted``: the default
pipeline, one event, its outbox row and the aggregate's state) is sent
open-loop at ``--rate`` per second, on PostgreSQL with the group commit and
the wake-up ``NOTIFY`` rounds, by a process of its own with
``PYTHONPATH=TREE`` (a ``src`` directory: the library under test). The trees
alternate within each round (``TREE@SECONDS``: that tree with
``create_engine(postgres_commit_linger=SECONDS)``), on one throwaway durable cluster started with
``pg_stat_statements`` (as ``benchmarks.relay_cpu`` does), so that load on a
shared machine spreads over all of them.

Per run it prints one JSON line, per command: the CPU of the sending process
and of PostgreSQL (the server and its backends, ``/proc``:
``benchmarks/proc_cpu.py``), the statements the server ran (all of them:
the sender is the database's only client) with calls per command and server
time per call, and the p50/p99 of the command's ``send``.

``--rate 0`` sends ``--commands`` closed-loop instead, ``--burst`` at once,
then the next ``--burst``: the group commit's batches, and with them the CPU
per command, then do not follow the machine's load.

``--instructions`` counts instead, under valgrind's callgrind, the
instructions of the sending process per command (a short and a long run,
the difference per command: start-up cancels out), sending ``--burst``
commands at once, then the next ``--burst`` (closed loop: the group commit's
batches do not depend on the machine's load). ``--profile DIR`` runs each
timed sender under ``cProfile`` (CPU clock) and writes ``DIR/<n>.prof``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

_ROOT = str(Path(__file__).resolve().parent.parent)  # the ``benchmarks`` package's repository

_STATEMENTS = """
SELECT s.query, s.calls, s.total_exec_time + s.total_plan_time AS total_exec_time, s.plans
FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
WHERE d.datname = current_database() ORDER BY s.calls DESC
"""
_WARM = 300


async def _child(args: argparse.Namespace) -> None:
    """Send, in this process, and print the figures as one JSON line."""
    from benchmarks import proc_cpu
    from benchmarks.logs import configure_filtered
    from benchmarks.persisted import build_persisted
    from benchmarks.pg import _admin
    from cqrs_ddd_core.adapters.sqlalchemy import create_engine

    configure_filtered()
    options: dict[str, Any] = {"postgres_commit_linger": args.linger} if args.linger else {}
    engine = create_engine(args.url, pool_size=12, **options)
    persisted = build_persisted(engine, f"s{time.time_ns()}")
    send, make = persisted.mediator.send, persisted.command
    try:

        async def burst(n: int, at_once: int) -> None:
            for first in range(0, n, at_once):
                await asyncio.gather(*(send(make()) for _ in range(min(at_once, n - first))))

        await burst(_WARM, 8)
        if args.count is not None:  # under callgrind: closed loop, no timing
            await burst(args.count, args.burst)
            return
        await asyncio.sleep(0.2)  # the last wake-up round
        server = proc_cpu.listener_tree(args.port)
        await _admin(args.url, "SELECT pg_stat_statements_reset()")
        latencies: list[int] = []
        clock = time.perf_counter_ns

        async def one() -> None:
            command = make()
            start = clock()
            await send(command)
            latencies.append(clock() - start)

        n = int(args.rate * args.seconds) if args.rate > 0 else args.commands
        collections = [0, 0, 0]
        in_gc = [0.0, 0.0]  # seconds of CPU in the cyclic garbage collector, when it started

        def gc_watch(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                in_gc[1] = time.process_time()
            else:
                in_gc[0] += time.process_time() - in_gc[1]
                collections[info["generation"]] += 1

        gc.callbacks.append(gc_watch)
        profile = cProfile.Profile(time.process_time) if args.profile else None
        before = (proc_cpu.self_cpu(), server() if server is not None else 0.0)
        if profile is not None:
            profile.enable()
        start = time.perf_counter()
        tasks = []
        for i in range(n if args.rate > 0 else 0):  # open loop: one every 1/RATE s, whatever
            delay = start + i / args.rate - time.perf_counter()  # the others do
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        for first in range(n if args.rate > 0 else 0, n, args.burst):  # closed loop: bursts
            tasks.extend(one() for _ in range(min(args.burst, n - first)))
            await asyncio.gather(*tasks)
            tasks.clear()
        await asyncio.gather(*tasks)
        sent = n / (time.perf_counter() - start)
        await asyncio.sleep(0.05)  # the wake-up round after the last commits
        if profile is not None:
            profile.disable()
            profile.dump_stats(args.profile)
        after = (proc_cpu.self_cpu(), server() if server is not None else 0.0)
        gc.callbacks.remove(gc_watch)
        statements = await _admin(args.url, _STATEMENTS)
    finally:
        await engine.dispose()
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    print(
        json.dumps(
            {
                "sent_per_s": round(sent, 1),
                "send_p50_ms": round(cuts[49] / 1e6, 2),
                "send_p99_ms": round(cuts[98] / 1e6, 2),
                "sender_us": round((after[0] - before[0]) * 1e6 / n),
                "postgres_us": round((after[1] - before[1]) * 1e6 / n),
                "sender_gc_us": round(in_gc[0] * 1e6 / n),
                "gc_collections": collections,
                "statements_per_command": round(sum(r["calls"] for r in statements) / n, 3),
                "flushes_per_command": round(
                    sum(r["calls"] for r in statements if r["query"].startswith("WITH ")) / n, 3
                ),
                "notifies_per_command": round(_rounds(statements) / n, 3),
                "server_exec_us_per_command": round(
                    sum(r["total_exec_time"] for r in statements) * 1000 / n, 1
                ),
                "statements": {
                    " ".join(r["query"].split())[:60]: (
                        round(r["calls"] / n, 3),
                        round(r["total_exec_time"] * 1000 / max(r["calls"], 1), 1),
                        round(r["plans"] / max(r["calls"], 1), 2),
                    )
                    for r in statements
                },
            }
        ),
        flush=True,
    )


def _rounds(statements: list[Any]) -> int:
    """The wake-up rounds among ``statements``: ``SELECT pg_notify(...)`` (one per
    round), or ``NOTIFY "channel"`` (one per channel of a round: every command
    here writes both, so the outbox channel's are the rounds)."""
    selects = sum(r["calls"] for r in statements if "pg_notify" in r["query"])
    notifies = [r["calls"] for r in statements if r["query"].startswith('NOTIFY "cqrs_outbox"')]
    return selects + sum(notifies)


def _child_command(url: str, port: int, *extra: str) -> list[str]:
    return ["benchmarks.sender_cpu", "--child", f"--url={url}", f"--port={port}", *extra]


def _env(tree: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{tree.split('@')[0]}{os.pathsep}{_ROOT}"}


def _linger(tree: str) -> list[str]:
    """``TREE@SECONDS``: that tree's engine with ``postgres_commit_linger=SECONDS``."""
    return [f"--linger={tree.split('@')[1]}"] if "@" in tree else []


async def counted(env: dict[str, str], command: list[str]) -> int:
    """The instructions ``python -m <command>`` executes under callgrind, with ``env``
    (the process's environment while it starts: callgrind's child inherits it)."""
    from benchmarks.instructions import callgrind

    saved = os.environ.copy()
    os.environ.update(env)
    try:
        return await asyncio.to_thread(callgrind, command)
    finally:
        os.environ.clear()
        os.environ.update(saved)


async def child_result(command: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run ``python -m <command>`` with ``env``; its last line of output, a JSON object."""
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", *command],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise SystemExit(f"the sender failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


async def _main(args: argparse.Namespace) -> None:
    from benchmarks.pg import _admin, database
    from benchmarks.relay_cpu import _cluster

    with _cluster():
        async with database() as db:
            await _admin(db.url, "CREATE EXTENSION pg_stat_statements")
            runs = 0
            for r in range(args.rounds):
                for tree in args.trees if r % 2 == 0 else args.trees[::-1]:
                    runs += 1
                    if args.instructions:
                        counts = []
                        for count in (args.short, args.long):
                            child = _child_command(
                                db.url, db.port, f"--count={count}", f"--burst={args.burst}",
                                *_linger(tree),
                            )  # fmt: skip
                            counts.append(await counted(_env(tree), [*child, "--workdir"]))
                        per = (counts[1] - counts[0]) / (args.long - args.short)
                        result: dict[str, Any] = {"instructions_per_command": round(per)}
                    else:
                        extra = [f"--rate={args.rate}", f"--seconds={args.seconds}"]
                        extra += [f"--burst={args.burst}", f"--commands={args.commands}"]
                        extra += _linger(tree)
                        if args.profile:
                            extra.append(f"--profile={Path(args.profile) / f'{runs}.prof'}")
                        result = await child_result(
                            _child_command(db.url, db.port, *extra), _env(tree)
                        )
                    print(json.dumps({"round": r + 1, "tree": tree, **result}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sender_cpu")
    parser.add_argument(
        "trees",
        nargs="*",
        help="src directories (PYTHONPATH of the sender); TREE@SECONDS: with that "
        "postgres_commit_linger",
    )
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", metavar="DIR", help="cProfile each sender into DIR")
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions under callgrind"
    )
    parser.add_argument(
        "--burst", type=int, default=8, help="commands at once (--instructions, --rate 0)"
    )
    parser.add_argument("--commands", type=int, default=3000, help="commands sent (--rate 0)")
    parser.add_argument("--short", type=int, default=200)
    parser.add_argument("--long", type=int, default=800)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--linger", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(_child(args))
        return
    if not args.trees:
        parser.error("name at least one tree")
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
