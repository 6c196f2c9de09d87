"""The relay's CPU and PostgreSQL's per message at a steady commit rate, tree against tree.

``python -m benchmarks.relay_cpu [--rate 500] [--seconds 6] [--rounds 3] TREE [TREE...]``

Workload 8's latency run without the consumer: commands are sent open-loop at
``--rate`` per second from this process (the persisted command, one event and
its outbox row each), and ``cqrs-ddd relay`` runs in a process of its own with
``PYTHONPATH=TREE`` (a ``src`` directory: the library under test), woken by
PostgreSQL's ``NOTIFY`` only (it polls once a second), publishing with
confirms to a topic exchange whose 16 durable partition queues keep the
messages; this process consumes them with automatic acks (a message
delivered before RabbitMQ wrote it need not be written: with nobody consuming,
every confirm would wait for a disk write, and batches would be far larger
than in workload 8). A run ends when every message was delivered; the latency
is from the command's return to the delivery here (what the relay adds, and
RabbitMQ). ``--burst K`` sends closed-loop instead: K commands at once, then
waits until all K were delivered, so that the relay claims K per wake-up
whatever the machine's load (batch sizes, and with them the CPU per message,
otherwise follow the load).

Per run it prints, per message: the CPU of the relay process, of PostgreSQL
(the server and its backends, ``/proc``: ``benchmarks/proc_cpu.py``) and of
this process (the sender: the same code in every run); and, from
``pg_stat_statements`` (the cluster is this tool's own, started with it), the
statements the relay sent (it connects as a role of its own), per message and
each with its calls per message, server time per call (planning included),
plans per call, buffers hit per call and WAL records per call.

The trees alternate within each round, on the same throwaway PostgreSQL
cluster and RabbitMQ node (``benchmarks/pg.py``, ``benchmarks/rabbitmq.py``),
so that load on a shared machine spreads over all of them. ``--profile DIR``
runs each relay under ``cProfile`` (CPU clock) and writes ``DIR/<n>.prof``;
``--py-spy DIR`` samples each relay during the timed part with ``py-spy`` (on
``PATH``, or ``--py-spy-bin``; far less overhead than ``cProfile``, whose cost
per call swells aio-pika's and pamqp's many small functions) into
``DIR/<n>.txt`` (collapsed stacks).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_PROFILED = """
import cProfile, sys, time
from cqrs_ddd_advanced_core.cli.main import main
profile = cProfile.Profile(time.process_time)
try:
    profile.runcall(main, sys.argv[1:])
finally:
    profile.dump_stats(OUT)
"""

_ROLE = "relay"  # the relay connects as this role: its statements are told apart by it

_STATEMENTS = f"""
SELECT s.query, s.calls, s.rows, s.total_exec_time + s.total_plan_time AS total_exec_time,
    s.total_plan_time, s.plans, s.shared_blks_hit, s.wal_records
FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
WHERE r.rolname = '{_ROLE}' ORDER BY s.calls DESC
"""


@contextlib.contextmanager
def _cluster() -> Iterator[None]:
    """A throwaway durable cluster with ``pg_stat_statements`` for ``benchmarks.pg``."""
    from benchmarks.pg import ENV_URL
    from tests.support.postgres import PostgresServer, find_bindir

    if os.environ.get(ENV_URL):
        raise SystemExit(f"{ENV_URL} is set: this tool starts its own cluster")
    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL is not installed (no initdb)")
    server = PostgresServer(bindir, durable=True).start()
    try:
        assert server.basedir is not None
        conf = server.basedir / "data" / "postgresql.auto.conf"
        with conf.open("a") as f:
            f.write("shared_preload_libraries = 'pg_stat_statements'\n")
            f.write("pg_stat_statements.track_planning = on\n")
        server._run(
            str(bindir / "pg_ctl"), "-D", str(server.basedir / "data"), "-m", "fast", "-w",
            "-l", str(server.basedir / "server.log"), "restart",
        )  # fmt: skip
        os.environ[ENV_URL] = server.url
        yield
    finally:
        os.environ.pop(ENV_URL, None)
        server.stop()


async def _one(
    persisted: Any,
    db: Any,
    url: str,
    tree: str,
    rate: float,
    seconds: float,
    profile: str | None,
    burst: int = 0,
    spy_out: str | None = None,
    spy_bin: str = "py-spy",
    callgrind_out: str | None = None,
) -> dict[str, Any]:
    import aio_pika
    from sqlalchemy.engine import make_url

    from benchmarks import proc_cpu
    from benchmarks.pg import _admin
    from cqrs_ddd_advanced_core.adapters.rabbitmq import ConsumerTopology, RabbitMQSubscriber
    from cqrs_ddd_advanced_core.messaging.headers import AGGREGATE_ID

    name = f"relaycpu-{time.time_ns()}"
    topology = ConsumerTopology(name, partitions=16, exchange=name)
    await RabbitMQSubscriber(url, topology).declare()
    env = {**os.environ, "PYTHONPATH": tree}
    relay_url = make_url(db.url).set(username=_ROLE).render_as_string(hide_password=False)
    args = [
        "relay", f"--database-url={relay_url}", f"--broker-url={url}", f"--exchange={name}",
        "--poll-interval=1", "--log-level=error",
    ]  # fmt: skip
    if profile is None:
        command = [sys.executable, "-m", "cqrs_ddd_advanced_core.cli.main", *args]
    else:
        code = f"OUT = {profile!r}\n{_PROFILED}"
        command = [sys.executable, "-c", code, *args]
    if callgrind_out is not None:
        command = [
            "valgrind", "--tool=callgrind", "--instr-atstart=no",
            f"--callgrind-out-file={callgrind_out}", *command,
        ]  # fmt: skip
    relay = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    assert relay.stderr is not None
    connection = await aio_pika.connect(url)
    committed: dict[str, float] = {}
    delivered: dict[str, float] = {}
    done = asyncio.Event()
    n = int(rate * seconds)

    caught_up = asyncio.Event()

    async def on_message(message: Any) -> None:  # auto-acked: no persisting needed
        delivered[message.headers[AGGREGATE_ID]] = time.perf_counter()
        if len(delivered) >= len(committed):
            caught_up.set()
        if len(delivered) >= n and len(committed) >= n:
            done.set()

    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=1000)
        for queue in topology.queues:
            await (await channel.get_queue(queue)).consume(on_message, no_ack=True)
        async with asyncio.timeout(60 if callgrind_out is None else 600):
            while b"running" not in await relay.stderr.readline():
                pass
        await asyncio.sleep(1.5)  # its first look at the outbox
        if callgrind_out is not None:
            await asyncio.sleep(5)  # the rest of its first batches, under valgrind
        await _admin(db.url, "SELECT pg_stat_statements_reset()")
        delivered.clear()
        cpu = {
            "relay": lambda: proc_cpu.process_cpu(relay.pid),
            "postgres": proc_cpu.listener_tree(db.port),
            "sender": proc_cpu.self_cpu,
        }
        spy = None
        if spy_out is not None:
            spy = await asyncio.create_subprocess_exec(
                spy_bin, "record", "--pid", str(relay.pid), "--rate", "1000",
                "--format", "raw", "--output", spy_out,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            await asyncio.sleep(0.5)  # attached
        if callgrind_out is not None:
            await _callgrind_control("--instr=on", relay.pid)
            await _callgrind_control("--zero", relay.pid)
        before = {k: read() for k, read in cpu.items() if read is not None}
        start = time.perf_counter()
        tasks = []
        send = persisted.mediator.send

        async def one() -> None:
            command = persisted.command()
            await send(command)
            committed[command.account_id] = time.perf_counter()

        if burst:  # closed loop: ``burst`` commands at once, then wait for their delivery
            for first in range(0, n, burst):
                caught_up.clear()
                await asyncio.gather(*(one() for _ in range(min(burst, n - first))))
                async with asyncio.timeout(60 if callgrind_out is None else 600):
                    while len(delivered) < len(committed):
                        await caught_up.wait()
                        caught_up.clear()
        for i in range(0 if burst else n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
        sent = n / (time.perf_counter() - start)
        if len(delivered) >= n:
            done.set()
        async with asyncio.timeout(120):
            await done.wait()
        after = {k: cpu[k]() for k in before}
        if callgrind_out is not None:
            await _callgrind_control("--dump", relay.pid)
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # it writes its file and exits
            await asyncio.wait_for(spy.wait(), 60)
        statements = await _admin(db.url, _STATEMENTS)
    finally:
        if relay.returncode is None:
            relay.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(relay.wait(), 30)
        except TimeoutError:
            relay.kill()
        await connection.close()
    latencies = sorted(delivered[k] - committed[k] for k in committed)
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    result: dict[str, Any] = {
        "tree": tree,
        "sent_per_s": round(sent, 1),
        "p50_ms": round(cuts[49] * 1000, 2),
        "p99_ms": round(cuts[98] * 1000, 2),
        **{f"{k}_us": round((after[k] - v) * 1e6 / n) for k, v in before.items()},
        "relay_statements_per_message": round(sum(r["calls"] for r in statements) / n, 3),
        "relay_statements_exec_us": round(
            sum(r["total_exec_time"] for r in statements) * 1000 / n, 1
        ),
        "relay_commits_per_message": round(
            sum(r["calls"] for r in statements if r["query"].upper() == "COMMIT") / n, 3
        ),
        "relay_statements": {
            " ".join(r["query"].split())[:50]: (
                round(r["calls"] / n, 3),
                round(r["total_exec_time"] * 1000 / max(r["calls"], 1), 1),
                round(r["total_plan_time"] * 1000 / max(r["calls"], 1), 1),
                round(r["plans"] / max(r["calls"], 1), 2),
                round(r["shared_blks_hit"] / max(r["calls"], 1), 1),
                round(r["wal_records"] / max(r["calls"], 1), 1),
            )
            for r in statements
        },
    }
    if callgrind_out is not None:
        result["relay_instructions_per_message"] = round(_instructions(callgrind_out) / n)
    return result


async def _callgrind_control(option: str, pid: int) -> None:
    control = await asyncio.create_subprocess_exec(
        "callgrind_control", option, str(pid),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    async with asyncio.timeout(120):
        await control.wait()


def _instructions(out: str) -> int:
    """Instructions counted between ``--instr=on`` and the dump (its ``.1`` file)."""
    total = 0
    for path in sorted(Path(out).parent.glob(Path(out).name + ".*")):
        for line in path.read_text().splitlines():
            if line.startswith("summary:") or line.startswith("totals:"):
                total += int(line.split()[1])
                break
    return total


async def _main(args: argparse.Namespace) -> None:
    from benchmarks.logs import configure_filtered
    from benchmarks.persisted import build_persisted
    from benchmarks.pg import database
    from benchmarks.rabbitmq import broker
    from benchmarks.workloads.messaging import _analyze, _fill
    from cqrs_ddd_core.adapters.sqlalchemy import create_engine

    configure_filtered()
    with _cluster():
        await _runs(args, database, broker, build_persisted, create_engine, _fill, _analyze)


async def _runs(
    args: argparse.Namespace,
    database: Any,
    broker: Any,
    build_persisted: Any,
    create_engine: Any,
    _fill: Any,
    _analyze: Any,
) -> None:
    from benchmarks.pg import _admin

    async with database() as db, broker() as (url, _where):
        await _admin(db.url, "CREATE EXTENSION pg_stat_statements")
        await _admin(db.url, f"CREATE ROLE {_ROLE} LOGIN SUPERUSER")
        engine = create_engine(db.url, pool_size=12)
        try:
            persisted = build_persisted(engine, "relaycpu")
            await _fill(persisted, 200)
            await _analyze(engine)
            runs = 0
            for r in range(args.rounds):
                trees = args.trees if r % 2 == 0 else args.trees[::-1]
                for tree in trees:
                    runs += 1
                    profile = spy = grind = None
                    if args.callgrind:
                        grind = str(Path(args.callgrind) / f"{runs}.out")
                    if args.profile:
                        profile = str(Path(args.profile) / f"{runs}.prof")
                    if args.py_spy:
                        spy = str(Path(args.py_spy) / f"{runs}.txt")
                    result = await _one(
                        persisted,
                        db,
                        url,
                        tree,
                        args.rate,
                        args.seconds,
                        profile,
                        args.burst,
                        spy,
                        args.py_spy_bin,
                        grind,
                    )
                    result["round"] = r + 1
                    print(json.dumps(result), flush=True)
        finally:
            await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.relay_cpu")
    parser.add_argument("trees", nargs="+", help="src directories (PYTHONPATH of the relay)")
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--burst",
        type=int,
        default=0,
        metavar="K",
        help="closed loop instead: K commands at once, then wait until all K are delivered "
        "(the relay then claims K per wake-up whatever the load: CPU per message compares)",
    )
    parser.add_argument("--profile", metavar="DIR", help="cProfile each relay into DIR")
    parser.add_argument("--py-spy", metavar="DIR", help="sample each relay with py-spy into DIR")
    parser.add_argument("--py-spy-bin", default="py-spy")
    parser.add_argument(
        "--callgrind",
        metavar="DIR",
        help="run each relay under valgrind's callgrind, counting instructions during the "
        "timed part only: relay_instructions_per_message (load-independent; use --burst)",
    )
    args = parser.parse_args()
    for directory in (args.profile, args.py_spy, args.callgrind):
        if directory:
            Path(directory).mkdir(parents=True, exist_ok=True)
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
