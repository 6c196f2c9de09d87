"""RabbitMQ's CPU per message, for alternative topologies, messages and node settings.

``python -m benchmarks.broker_cpu [--messages 3000] [--rate 500] [--rounds 3] [VARIANT ...]``

Workload 8 spends 0.65-0.76 ms of the broker's CPU per message at 500/s. This
isolates the broker: one process publishes ``--messages`` messages shaped like
the relay's (``raw_message`` of an ``AccountOpened`` outbox message: the JSON
body, the ``cqrs-*`` headers and a ``traceparent``, persistent, message id,
type, correlation id, content type, timestamp) open-loop at ``--rate`` per
second (``--group`` at a time, as the relay hands a claim's messages over),
on one channel with publisher confirms; one connection consumes the service's
partition queues (one channel, ``prefetch`` 64) and acknowledges what it got
every ``--ack-every`` seconds with one ``basic.ack`` (``multiple``), as the
subscriber does after each committed batch. A round ends when every message
was confirmed and delivered and the last ack was sent (plus ``--settle``
seconds for what the broker does after: its disk writes). The publish-to-delivery
and publish-to-confirm times are printed too (this process's event loop and
the machine's load are in them: compare within a run).

Printed per round and variant: the CPU milliseconds per message of the node
(the ``beam.smp`` tree listening on the AMQP port, ``/proc``:
``benchmarks/proc_cpu.py``), split into user and system time and by Erlang
thread kind (schedulers, dirty I/O schedulers: file writes and ``fsync``,
the poller) and its Erlang reductions (``rabbitmqctl eval``: the work of its
Erlang code, counted whatever the machine's load; system calls, the VM's own
threads and native code are not in them); ``--syscalls`` also counts its system
calls (``perf stat`` on the syscall tracepoints, as root). The median over
rounds at the end, with the node's idle CPU.
Each round declares the variant's exchanges and queues afresh (not timed)
and deletes them after. Variants alternate within every round (their order
rotates), so that load on a shared machine spreads over all of them.

Variants (``--list``): ``today`` is the library's ``ConsumerTopology``
(``cqrs.events`` -> ``S.route`` with 256 bucket bindings -> 16 partition
queues, durable, single active consumer, dead-letter exchange); the others
change one thing each: the topology (``one-hop``: the partition queues bound
to the events exchange itself), the queues (``v2``: ``x-queue-version`` 2), the
partition count, the message (fewer headers, a larger body), the consumer's
prefetch or ack interval, the publisher's group, or the node (``node-*``: a node of its own
started with other ``rabbitmq.conf`` lines, plugins or Erlang flags, and
``node-default``, a second node with the defaults, to compare them with).
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
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PARTITIONS = 16
BUCKETS = 256


@dataclass(frozen=True)
class Node:
    """How a throwaway node is started (``benchmarks.rabbitmq.broker``)."""

    config: str = ""
    plugins: tuple[str, ...] = ()
    erl_args: str = ""


@dataclass(frozen=True)
class Variant:
    """One alternative: what differs from ``today``."""

    about: str
    hops: int = 2  # 2: events -> S.route -> queues (today); 1: events -> queues
    queue_args: dict[str, Any] = field(default_factory=dict)
    partitions: int = PARTITIONS
    headers: str = "ours"  # "ours", "lean" (type and stream only), "none"
    body_bytes: int = 0  # 0: our body; else padded to about this size
    prefetch: int = 64
    group: int = 1
    ack_every: float | None = None  # None: --ack-every
    node: str = "default"
    library: bool = False  # declared by ConsumerTopology itself


NODES: dict[str, Node] = {
    "default": Node(),
    "node-default": Node(),
    "node-v2": Node(config="classic_queue.default_version = 2\n"),
    "node-mgmt": Node(plugins=("rabbitmq_management",)),
    "node-mgmt-60s": Node(
        plugins=("rabbitmq_management",), config="collect_statistics_interval = 60000\n"
    ),
    "node-S1": Node(erl_args="+S 1:1"),
    "node-stbt-u": Node(erl_args="+stbt u"),
    "node-embed0": Node(config="queue_index_embed_msgs_below = 0\n"),
}

VARIANTS: dict[str, Variant] = {
    "today": Variant("ConsumerTopology as declared today", library=True),
    "today-copy": Variant("the same, declared by this tool (checks the copy)"),
    "one-hop": Variant("partition queues bound to the events exchange", hops=1),
    "v2": Variant("x-queue-version 2", queue_args={"x-queue-version": 2}),
    "one-hop-v2": Variant("one hop and queue version 2", hops=1, queue_args={"x-queue-version": 2}),
    "p4": Variant("4 partition queues", partitions=4),
    "p1": Variant("1 partition queue", partitions=1),
    "lean-headers": Variant("2 headers (type, stream) instead of ours", headers="lean"),
    "no-headers": Variant("no headers at all", headers="none"),
    "body-2k": Variant("a 2 KB body", body_bytes=2048),
    "prefetch-256": Variant("consumer prefetch 256", prefetch=256),
    "group-4": Variant("published 4 at a time", group=4),
    "ack-20ms": Variant("one multiple ack every 20 ms", ack_every=0.02),
    "lazy": Variant("x-queue-mode lazy", queue_args={"x-queue-mode": "lazy"}),
    **{
        name: Variant(f"a node started with {node}", node=name)
        for name, node in NODES.items()
        if name != "default"
    },
}


def _outbox_message(index: int, run: str) -> Any:
    """An ``AccountOpened`` outbox message as the persisted command's pipeline writes it."""
    from benchmarks.persisted import Account
    from cqrs_ddd_advanced_core.outbox.message import message_from_event

    account = Account.open(f"{run}-{index}", "alice", 100)
    (event,) = account.collect_events()
    command_id = str(uuid.uuid4())
    event = event.model_copy(update={"correlation_id": command_id, "causation_id": command_id})
    trace = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
    return message_from_event(event, trace_context={"traceparent": trace})


def _amqp_message(index: int, run: str, variant: Variant) -> tuple[Any, str]:
    import aio_pika

    from benchmarks.workloads.messaging import raw_message
    from cqrs_ddd_advanced_core.messaging import headers as h

    outbox = _outbox_message(index, run)
    message = raw_message(outbox)
    if variant.headers == "lean":
        message.headers = {key: message.headers[key] for key in (h.MESSAGE_TYPE, h.STREAM)}
    elif variant.headers == "none":
        message.headers = {}
    if variant.body_bytes:
        padding = "x" * max(0, variant.body_bytes - len(message.body) - 12)
        body = json.dumps({**outbox.payload, "padding": padding}).encode()
        message = aio_pika.Message(body, **{k: v for k, v in message.info().items() if k in _PROPS})
    return message, h.routing_key(outbox)


_PROPS = (
    "headers", "content_type", "delivery_mode", "message_id", "correlation_id", "type", "timestamp",
)  # fmt: skip


async def _declare(channel: Any, variant: Variant, service: str, exchange: str) -> list[Any]:
    """The variant's exchanges and queues; returns the partition queues."""
    import aio_pika

    from cqrs_ddd_advanced_core.adapters.rabbitmq import ConsumerTopology, declare_exchange

    if variant.library:
        topology = ConsumerTopology(service, partitions=variant.partitions, exchange=exchange)
        return await topology.declare(channel)
    events = await declare_exchange(channel, exchange)
    router = events
    if variant.hops == 2:
        router = await channel.declare_exchange(
            f"{service}.route", aio_pika.ExchangeType.TOPIC, durable=True
        )
        await router.bind(events, "#")
    dlx = await channel.declare_exchange(
        f"{service}.dlx", aio_pika.ExchangeType.FANOUT, durable=True
    )
    dead = await channel.declare_queue(f"{service}.dead", durable=True)
    await dead.bind(dlx)
    queues = []
    for index in range(variant.partitions):
        queue = await channel.declare_queue(
            f"{service}.{index}",
            durable=True,
            arguments={
                "x-single-active-consumer": True,
                "x-dead-letter-exchange": f"{service}.dlx",
                **variant.queue_args,
            },
        )
        for bucket in range(index, BUCKETS, variant.partitions):
            await queue.bind(router, f"*.*.{bucket}")
        queues.append(queue)
    return queues


async def _remove(channel: Any, service: str, exchange: str, queues: list[Any]) -> None:
    for queue in queues:
        await queue.delete(if_unused=False, if_empty=False)
    await channel.queue_delete(f"{service}.dead")
    for name in (f"{service}.route", f"{service}.dlx", exchange):
        await channel.exchange_delete(name)


def _beam_pid(port: int) -> int | None:
    """The Erlang VM of the throwaway node listening on ``port`` (from its environment)."""
    mark = f"RABBITMQ_NODE_PORT={port}".encode()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if not Path(f"/proc/{entry}/exe").resolve().name.startswith("beam"):
                    continue
                environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if mark in environ:
                return int(entry)
    return None


def _environ(pid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/environ").read_text()
    return dict(line.split("=", 1) for line in text.split("\0") if "=" in line)


_EVAL = "{element(1, erlang:statistics(reductions)), erlang:system_info(schedulers_online)}."


async def _reductions(beam: int | None) -> tuple[int, int] | None:
    """The node's Erlang reductions so far (``rabbitmqctl eval``): its work, counted
    in function calls, whatever the machine's load; and its schedulers online
    (None: not our node)."""
    if beam is None:
        return None
    environ = _environ(beam)
    command = [
        "/usr/lib/rabbitmq/bin/rabbitmqctl", "-n", environ["RABBITMQ_NODENAME"],
        "eval", _EVAL,
    ]  # fmt: skip
    if os.geteuid() == 0:
        command = ["runuser", "-u", "rabbitmq", "--", "env", f"HOME={environ['HOME']}", *command]
    process = await asyncio.create_subprocess_exec(
        *command,
        env={**os.environ, "HOME": environ["HOME"]},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await process.communicate()
    if process.returncode != 0:
        return None
    reductions, schedulers = out.decode().strip("{}\n ").split(",")
    return int(reductions), int(schedulers)


def _kind(comm: str) -> str:
    """``1_dirty_io_sche`` -> ``dirty_io``: the VM's thread names, by kind."""
    for kind in ("dirty_io", "dirty_cpu", "scheduler", "poller", "aux", "async"):
        if kind in comm:
            return kind
    return comm


def _threads(pid: int | None) -> dict[str, tuple[float, float]]:
    """(user, system) CPU seconds of the VM's threads, summed by kind."""
    if pid is None:
        return {}
    tick = os.sysconf("SC_CLK_TCK")
    kinds: dict[str, tuple[float, float]] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return {}
    for tid in tids:
        try:
            text = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1 : text.rfind(")")]
        fields = text[text.rfind(")") + 2 :].split()
        kind = _kind(comm)
        user, system = kinds.get(kind, (0.0, 0.0))
        kinds[kind] = (user + int(fields[11]) / tick, system + int(fields[12]) / tick)
    return kinds


@contextlib.asynccontextmanager
async def _nodes(names: set[str]) -> AsyncIterator[dict[str, tuple[str, Callable[[], float]]]]:
    from benchmarks import proc_cpu
    from benchmarks.rabbitmq import broker

    started: dict[str, tuple[str, Callable[[], float]]] = {}
    async with contextlib.AsyncExitStack() as stack:
        for name in sorted(names):
            node = NODES[name]
            url, _ = await stack.enter_async_context(
                broker(config=node.config, plugins=node.plugins, erl_args=node.erl_args)
            )
            port = int(url.rsplit(":", 1)[1].strip("/"))
            meter = proc_cpu.listener_tree(port)
            if meter is None:
                raise RuntimeError(f"the broker at {url} is not on this machine: no CPU to read")
            started[name] = (url, meter)
        yield started


async def _round(
    args: argparse.Namespace, variant: Variant, url: str, meter: Callable[[], float]
) -> dict[str, Any]:
    import aio_pika

    run = uuid.uuid4().hex[:8]
    service, exchange = f"bcpu-{run}", f"bcpu-{run}.events"
    messages = [_amqp_message(i, run, variant) for i in range(args.messages)]
    port = int(url.rsplit(":", 1)[1].strip("/"))
    beam = _beam_pid(port)
    published: dict[str, float] = {}
    delivered: dict[str, float] = {}
    confirmed_at: dict[str, float] = {}
    done = asyncio.Event()
    async with (
        await aio_pika.connect(url) as publishing,
        await aio_pika.connect(url) as consuming,
    ):
        pub_channel = await publishing.channel(publisher_confirms=True)
        con_channel = await consuming.channel()
        await con_channel.set_qos(prefetch_count=variant.prefetch)
        queues = await _declare(con_channel, variant, service, exchange)
        events = await pub_channel.get_exchange(exchange)
        last: list[Any] = []

        async def on_message(message: Any) -> None:
            delivered[message.message_id] = time.perf_counter()
            last.append(message)
            if len(delivered) == args.messages:
                done.set()

        tags = [(queue, await queue.consume(on_message)) for queue in queues]

        ack_every = args.ack_every if variant.ack_every is None else variant.ack_every

        async def acks() -> None:
            while True:
                await asyncio.sleep(ack_every)
                if last:
                    top = max(last, key=lambda m: m.delivery_tag)
                    last.clear()
                    await top.ack(multiple=True)

        acker = asyncio.create_task(acks())
        await asyncio.sleep(0.5)
        reductions0 = await _reductions(beam)  # (its own cost outside the CPU window)
        perf = None
        if args.syscalls and beam is not None:
            perf = await asyncio.create_subprocess_exec(
                "perf", "stat", "-x", ",", "-p", str(beam), "-e", "syscalls:sys_enter_*",
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            await asyncio.sleep(1.0)  # attached
        cpu0, threads0, wall0 = meter(), _threads(beam), time.perf_counter()
        confirms = []
        start = time.perf_counter()
        for i in range(0, len(messages), variant.group):
            delay = start + i / args.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            for message, key in messages[i : i + variant.group]:
                published[message.message_id] = time.perf_counter()
                confirm = asyncio.ensure_future(events.publish(message, key))
                confirm.add_done_callback(
                    lambda _, mid=message.message_id: confirmed_at.__setitem__(
                        mid, time.perf_counter()
                    )
                )
                confirms.append(confirm)
        results = await asyncio.gather(*confirms)
        async with asyncio.timeout(120):
            await done.wait()
        await asyncio.sleep(args.settle)  # the last ack goes out (settle >> ack_every)
        cpu1, threads1, wall1 = meter(), _threads(beam), time.perf_counter()
        reductions1 = await _reductions(beam)
        syscalls: dict[str, float] = {}
        if perf is not None and perf.stderr is not None:
            perf.send_signal(signal.SIGINT)
            report = (await asyncio.wait_for(perf.stderr.read(), 60)).decode()
            for line in report.splitlines():
                fields = line.split(",")
                if len(fields) > 2 and fields[0].isdigit() and int(fields[0]) > 0:
                    name = fields[2].rsplit("sys_enter_", 1)[-1]
                    syscalls[name] = round(int(fields[0]) / args.messages, 2)
        acker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await acker
        for queue, tag in tags:
            await queue.cancel(tag)
        await _remove(con_channel, service, exchange, queues)
    confirmed = sum(type(r).__name__ == "Ack" for r in results)
    n = args.messages
    latencies = sorted(delivered[k] - published[k] for k in published if k in delivered)
    confirm_ms = sorted(confirmed_at[k] - published[k] for k in published if k in confirmed_at)
    user = sum(threads1.get(k, (0, 0))[0] - v[0] for k, v in threads0.items())
    system = sum(threads1.get(k, (0, 0))[1] - v[1] for k, v in threads0.items())
    by_kind = {
        kind: round(sum(threads1[kind]) - sum(threads0.get(kind, (0.0, 0.0))), 3)
        for kind in threads1
    }
    reductions = schedulers = None
    if reductions0 is not None and reductions1 is not None:
        reductions = round((reductions1[0] - reductions0[0]) / n)
        schedulers = reductions1[1]
    return {
        "cpu_ms_per_message": round((cpu1 - cpu0) * 1000 / n, 3),
        "reductions_per_message": reductions,
        "schedulers": schedulers,
        "user_ms": round(user * 1000 / n, 3),
        "system_ms": round(system * 1000 / n, 3),
        "threads_ms": {k: round(v * 1000 / n, 3) for k, v in by_kind.items() if v > 0},
        "wall_s": round(wall1 - wall0, 2),
        **({"syscalls_per_message": syscalls} if syscalls else {}),
        "confirmed": confirmed,
        "delivered": len(delivered),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
        "confirm_p50_ms": round(confirm_ms[len(confirm_ms) // 2] * 1000, 2),
        "confirm_p90_ms": round(confirm_ms[len(confirm_ms) * 9 // 10] * 1000, 2),
        "message_bytes": len(messages[0][0].body),
        "headers": len(messages[0][0].headers or {}),
    }


async def _idle(meter: Callable[[], float], seconds: float) -> float:
    """CPU milliseconds per second of a node doing nothing."""
    before = meter()
    await asyncio.sleep(seconds)
    return round((meter() - before) * 1000 / seconds, 2)


async def _run(args: argparse.Namespace) -> None:
    variants = {name: VARIANTS[name] for name in args.variants}
    async with _nodes({v.node for v in variants.values()}) as nodes:
        idle = {name: await _idle(meter, 3.0) for name, (_url, meter) in nodes.items()}
        print(json.dumps({"idle_cpu_ms_per_s": idle}), flush=True)
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
        names = list(variants)
        for r in range(args.rounds):
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                url, meter = nodes[variants[name].node]
                result = await _round(args, variants[name], url, meter)
                results[name].append(result)
                print(json.dumps({"round": r + 1, "variant": name, **result}), flush=True)
        print(json.dumps({"uptime": os.getloadavg()}), flush=True)
        for name, rounds in results.items():
            cpu = [x["cpu_ms_per_message"] for x in rounds]
            print(
                json.dumps(
                    {
                        "variant": name,
                        "about": variants[name].about,
                        "median_cpu_ms_per_message": round(statistics.median(cpu), 3),
                        "rounds": cpu,
                        "median_reductions": statistics.median(
                            x["reductions_per_message"] or 0 for x in rounds
                        ),
                        "median_system_ms": round(
                            statistics.median(x["system_ms"] for x in rounds), 3
                        ),
                        "median_p50_ms": round(statistics.median(x["p50_ms"] for x in rounds), 2),
                        "median_confirm_p50_ms": round(
                            statistics.median(x["confirm_p50_ms"] for x in rounds), 2
                        ),
                    }
                ),
                flush=True,
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="*", default=["today", "one-hop", "v2"])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ack-every", type=float, default=0.002)
    parser.add_argument("--settle", type=float, default=0.3)
    parser.add_argument(
        "--syscalls", action="store_true", help="count the node's system calls (perf stat, root)"
    )
    parser.add_argument("--list", action="store_true", help="list the variants")
    args = parser.parse_args(argv)
    if args.list:
        for name, variant in VARIANTS.items():
            print(f"{name:16} {variant.about}")
        return
    unknown = [name for name in args.variants if name not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; --list lists them")
    asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
