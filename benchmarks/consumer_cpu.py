"""The consumer's CPU per delivery, and what it makes RabbitMQ and PostgreSQL spend.

``python -m benchmarks.consumer_cpu``: a ``benchmarks.latency_consumer`` process
(``MessageConsumer`` with its inbox on PostgreSQL behind a ``RabbitMQSubscriber``,
16 partition queues, as workload 8 runs it) is fed messages published straight
to the exchange by this process (raw aio-pika with confirms: no sender, no
relay), ``--burst`` at a time every ``--interval`` seconds, spread over the
partitions. Workload 8 at 500 commands/s on a quiet machine hands the consumer
a message or two at a time (its transactions hold 1.6 deliveries on average);
a paced feed reproduces that regime even on a loaded machine, where the full
latency run falls behind and batches grow. Printed per message, from the first
timed publish to the last effect: the CPU milliseconds of the consumer process,
of the RabbitMQ node (its publishes included: the same in both columns of a
comparison) and of PostgreSQL (only the consumer uses it here), with the
deliveries per transaction and the publish-to-effect latency.

The consumer imports the library from ``PYTHONPATH`` like this process:
``PYTHONPATH=<tree>/src:. python -m benchmarks.consumer_cpu``. ``--py-spy FILE``
samples the consumer during the timed part with ``py-spy`` (on ``PATH``, or
``--py-spy-bin``), written in its ``raw`` (collapsed stacks) format;
``--syscalls`` counts the consumer's system calls that send, receive and wait
(``perf stat`` on Linux's syscall tracepoints, run as root), per message: a
socket write is a frame or a statement sent, and costs the kernel's loopback
path on top.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any


def _message(index: int, run: str) -> tuple[Any, str, str]:
    """An ``AccountOpened`` as the relay publishes it, its routing key and aggregate id."""
    import aio_pika

    from cqrs_ddd_advanced_core.messaging import headers as h

    account = f"{run}-{index}"
    stream = f"Account:{account}"
    headers: dict[str, Any] = {
        h.MESSAGE_TYPE: "AccountOpened",
        h.STREAM: stream,
        h.AGGREGATE_TYPE: "Account",
        h.AGGREGATE_ID: account,
        h.AGGREGATE_VERSION: 1,
        h.SCHEMA_VERSION: 1,
        h.CORRELATION_ID: uuid.uuid4().hex,
        h.CAUSATION_ID: uuid.uuid4().hex,
        "traceparent": f"00-{uuid.uuid4().hex}{uuid.uuid4().hex[:16]}-{uuid.uuid4().hex[:16]}-01",
    }
    body = json.dumps({"owner": "alice", "balance": 100, "account_id": account}).encode()
    message = aio_pika.Message(
        body,
        headers=headers,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=str(uuid.uuid4()),
        correlation_id=headers[h.CORRELATION_ID],
        type="AccountOpened",
    )
    return message, f"Account.AccountOpened.{h.bucket(stream)}", account


async def _run(args: argparse.Namespace) -> None:
    from benchmarks.pg import database
    from benchmarks.rabbitmq import broker

    async with database() as db, broker() as (url, _where):
        for repeat in range(args.repeat):
            result = await _one(args, db.url, url)
            print(json.dumps({"run": repeat + 1, **result}), flush=True)


async def _one(args: argparse.Namespace, db_url: str, url: str) -> dict[str, Any]:
    import aio_pika
    from sqlalchemy.engine import make_url

    from benchmarks import proc_cpu
    from cqrs_ddd_advanced_core.adapters.rabbitmq import (
        ConsumerTopology,
        RabbitMQSubscriber,
        declare_exchange,
    )

    run = f"cpu-{time.time_ns()}"
    slow = 20 if args.callgrind else 1  # valgrind runs the consumer 20-100x slower
    await RabbitMQSubscriber(url, ConsumerTopology(run, partitions=16, exchange=run)).declare()
    batches = Path(tempfile.gettempdir()) / f"{run}.batches.json"
    dump = Path(tempfile.gettempdir()) / f"{run}.callgrind"
    grind = (
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={dump}.%p"]
        if args.callgrind
        else []
    )
    consumer = await asyncio.create_subprocess_exec(
        *grind, sys.executable, "-m", "benchmarks.latency_consumer",
        f"--database-url={db_url}", f"--broker-url={url}", f"--service={run}", f"--exchange={run}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "CQRS_BENCH_CONSUMER_BATCHES": str(batches)},
    )  # fmt: skip
    stdout = consumer.stdout
    assert stdout is not None
    done: dict[str, float] = {}
    sent: dict[str, float] = {}
    arrived = asyncio.Event()

    async def read(count: int) -> None:
        while len(done) < count:
            line = (await stdout.readline()).split()
            if not line:
                raise RuntimeError("the consumer stopped")
            done[line[0].decode()] = float(line[1])
            arrived.set()

    try:
        async with asyncio.timeout(60 * slow):
            while (await stdout.readline()).strip() != b"ready":
                pass
        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await declare_exchange(channel, run)

            async def feed(first: int, count: int) -> None:
                if args.closed:
                    await closed(first, count)
                    return
                # Open loop: a burst every interval, whatever its confirms take.
                start = time.perf_counter()
                publishing: list[asyncio.Future[list[Any]]] = []
                for i in range(0, count, args.burst):
                    delay = start + (i // args.burst) * args.interval - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    group = [_message(first + j, run) for j in range(i, min(i + args.burst, count))]
                    now = time.time()
                    for _, _, account in group:
                        sent[account] = now
                    publishing.append(
                        asyncio.gather(*(exchange.publish(m, key) for m, key, _ in group))
                    )
                await asyncio.gather(*publishing)

            async def closed(first: int, count: int) -> None:
                # Closed loop: a burst, then the next once its effects were reported.
                end = first + count
                for i in range(first, end, args.closed):
                    group = [_message(j, run) for j in range(i, min(i + args.closed, end))]
                    now = time.time()
                    for _, _, account in group:
                        sent[account] = now
                    await asyncio.gather(*(exchange.publish(m, key) for m, key, _ in group))
                    while any(account not in done for _, _, account in group):
                        arrived.clear()
                        await arrived.wait()

            warm = args.warm
            await asyncio.gather(feed(0, warm), read(warm))
            pid = consumer.pid
            meters = {
                "consumer": lambda: proc_cpu.process_cpu(pid),
                "rabbitmq": proc_cpu.listener_tree(make_url(url).port or 5672),
                "postgres": proc_cpu.listener_tree(make_url(db_url).port or 5432),
            }
            spy = None
            if args.py_spy:
                spy = await asyncio.create_subprocess_exec(
                    args.py_spy_bin, "record", "--pid", str(pid), "--rate", "1000",
                    "--format", "raw", "--output", args.py_spy,
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                )  # fmt: skip
            perf = None
            if args.syscalls:
                perf = await asyncio.create_subprocess_exec(
                    "perf", "stat", "-x", ",", "-p", str(pid),
                    *(a for name in _SYSCALLS for a in ("-e", f"syscalls:sys_enter_{name}")),
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
                )  # fmt: skip
                await asyncio.sleep(0.5)  # attached
            if args.callgrind:
                await _callgrind_control("--zero", pid)
            before = {k: m() for k, m in meters.items() if m is not None}
            wall = time.perf_counter()
            await asyncio.gather(feed(warm, args.messages), read(warm + args.messages))
            wall = time.perf_counter() - wall
            after = {k: m() for k, m in meters.items() if m is not None}
            if args.callgrind:
                await _callgrind_control("--dump", pid)
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # it writes its file and exits
                await asyncio.wait_for(spy.wait(), 60)
            counts: dict[str, float] = {}
            if perf is not None and perf.stderr is not None:
                perf.send_signal(signal.SIGINT)
                report = (await asyncio.wait_for(perf.stderr.read(), 60)).decode()
                for line in report.splitlines():
                    fields = line.split(",")
                    if len(fields) > 2 and fields[0].isdigit():
                        name = fields[2].rsplit("sys_enter_", 1)[-1]
                        counts[name] = round(int(fields[0]) / args.messages, 2)
    finally:
        if consumer.returncode is None:
            consumer.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(consumer.wait(), 30 * slow)
        except TimeoutError:
            consumer.kill()
    cpu = {}
    for name, end in after.items():
        start = before.get(name)
        if end is not None and start is not None:
            cpu[name] = round((end - start) * 1000 / args.messages, 3)
    latencies = sorted(done[k] - sent[k] for k in list(sent)[args.warm :] if k in done)
    sizes = await asyncio.to_thread(_sizes, batches)
    instructions = await asyncio.to_thread(_instructions, dump) if args.callgrind else None
    transactions = sum(sizes.values())
    deliveries = sum(int(k) * v for k, v in sizes.items())
    return {
        "messages": args.messages,
        "per_second": round(args.messages / wall, 1),
        "cpu_ms_per_message": cpu,
        "deliveries_per_transaction": round(deliveries / transactions, 2) if transactions else None,
        **({"syscalls_per_message": counts} if counts else {}),
        **(
            {"consumer_instructions_per_message": round(instructions / args.messages)}
            if instructions is not None
            else {}
        ),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
    }


_SYSCALLS = ("sendto", "write", "recvfrom", "read", "epoll_wait")


async def _callgrind_control(option: str, pid: int) -> None:
    control = await asyncio.create_subprocess_exec(
        "callgrind_control", option, str(pid),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    if await asyncio.wait_for(control.wait(), 120):
        raise RuntimeError(f"callgrind_control {option} {pid} failed")


def _instructions(dump: Path) -> int | None:
    """The instructions in the dump ``--dump`` made (the timed part); the files removed."""
    total = None
    for path in dump.parent.glob(f"{dump.name}.*"):
        if path.name[len(dump.name) + 1 :].count(".") == 1:  # <pid>.<dump number>
            text = path.read_text(errors="replace")
            found = re.search(r"^(?:summary|totals):\s*(\d+)", text, re.MULTILINE)
            total = int(found.group(1)) if found else None
        path.unlink()
    return total


def _sizes(path: Path) -> dict[str, int]:
    """The consumer's ``{size: transactions}`` (and the file removed)."""
    if not path.exists():
        return {}
    sizes: dict[str, int] = json.loads(path.read_text(encoding="utf-8"))
    path.unlink()
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.consumer_cpu")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--warm", type=int, default=200)
    parser.add_argument("--burst", type=int, default=1, help="messages published at once")
    parser.add_argument("--interval", type=float, default=0.004, help="seconds between bursts")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--py-spy", default="", help="sample the consumer into this file")
    parser.add_argument("--py-spy-bin", default="py-spy")
    parser.add_argument("--syscalls", action="store_true", help="count them (perf stat)")
    parser.add_argument("--closed", type=int, default=0, help="closed loop: bursts of N")
    parser.add_argument("--callgrind", action="store_true", help="count instructions (valgrind)")
    asyncio.run(_run(parser.parse_args()))


if __name__ == "__main__":
    main()
