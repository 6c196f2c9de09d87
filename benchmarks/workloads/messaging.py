"""Workload 7: events leaving the process, on PostgreSQL and RabbitMQ.

**Relay throughput.** Per round, ``K`` outbox rows (one event each, distinct
aggregates) are committed and the table analysed, untimed; then the timed part: an ``OutboxRelay``
drains them to RabbitMQ with publisher confirms: its own loop (``run``, what
``cqrs-ddd relay`` runs: claims, the next claim overlapping the publishes,
marks them published, measures the lag), stopped once all ``K`` are confirmed.
The baseline, in the same round: raw aio-pika publishing the same ``K``
messages with confirms on one channel, ``batch_size`` at a time
concurrently, as the relay does with distinct streams. "The same" is the
AMQP message the relay sends without a tracing SDK, property for property
(:func:`raw_message`: the JSON text stored in the outbox as body, the
headers with the stored trace context, persistent, message id, type,
correlation id, content type, timestamp); until 2026-12-03 the baseline
left out the trace context, the correlation id, the content type and the
timestamp, and published a smaller message than the relay. Rounds
alternate which goes first.

**Commit-to-consumer latency.** Commands are sent at a fixed rate (500/s, open
loop) through the persisted command's pipeline; a relay
(``cqrs-ddd relay``, a process of its own: only PostgreSQL's ``NOTIFY`` wakes
it; it polls once a second) publishes them, and a consumer process
(``benchmarks.latency_consumer``: a ``MessageConsumer`` with its inbox on
PostgreSQL behind a ``RabbitMQSubscriber``) commits each one's effect. The
latency of an event is the time from its command's return (committed) to the
commit of its effect (wall clocks of one machine). The run at 500/s is made
``RUNS_AT_RATE`` times (fresh relay and consumer processes each time) and the
target is judged on the median run's p50; all runs' figures are reported. One
run's p50 on this 2-core machine, where the five processes take ~1.75 of the
cores at 500/s, varied from 12 to 30 ms between identical runs a minute apart
(2026-12-04): a single run said more about the minute than about the code.
Then the same at lower rates (``LOWER_RATES``, one run each), to show where a
p50 under 20 ms holds on this machine.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import sys
import time
from collections.abc import Iterable
from typing import Any

from benchmarks.harness import (
    CaseStats,
    Config,
    RatioStats,
    Target,
    WorkloadResult,
    summarize,
)
from benchmarks.logs import configure_filtered

NAME = "messaging"
TITLE = "8. Messaging: relay vs raw aio-pika (confirms), commit-to-consumer latency"

BATCH = 200
RATE = 500.0  # commands per second for the latency run
RUNS_AT_RATE = 3  # latency runs at RATE; the target is judged on the median run's p50
LOWER_RATES = (250.0, 100.0, 50.0, 20.0)  # then these, to find where p50 < 20 ms holds

TARGETS = [
    Target(
        "relay_vs_raw_aio_pika",
        "relay_throughput_vs_raw",
        ">=",
        0.7,
        "relay throughput (PostgreSQL outbox -> RabbitMQ, confirms) >= 0.7x raw aio-pika's",
    ),
    Target(
        "commit_to_consumer_p50",
        "commit_to_consumer_p50_ms",
        "<=",
        20.0,
        "commit-to-consumer latency p50 < 20 ms on PostgreSQL at 500 commands/s",
    ),
]


async def _fill(persisted: Any, k: int) -> None:
    send, make = persisted.mediator.send, persisted.command

    async def worker(share: int) -> None:
        for _ in range(share):
            await send(make())

    await asyncio.gather(*(worker(k // 8 + (1 if i < k % 8 else 0)) for i in range(8)))
    await _analyze(persisted.engine)


async def _analyze(engine: Any) -> None:
    # A table that grew from nothing has no statistics yet, and the planner then
    # scans it whole for `message_id IN (...)`; a production outbox has them.
    async with engine.begin() as conn:
        await conn.exec_driver_sql("ANALYZE outbox")


def raw_message(m: Any) -> Any:
    """The AMQP message the raw baseline publishes for outbox message ``m``: the
    relay's (``RabbitMQPublisher`` without a tracing SDK), property for property."""
    import aio_pika

    from cqrs_ddd_advanced_core.messaging.headers import encode_headers

    return aio_pika.Message(
        m.payload_json.encode(),
        headers=encode_headers(m, m.trace_context),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=m.message_id,
        correlation_id=m.correlation_id,
        type=m.message_type,
        timestamp=m.created_at,
    )


async def _relay_vs_raw(persisted: Any, url: str, rounds: int, k: int) -> list[CaseStats]:
    import aio_pika

    from cqrs_ddd_advanced_core.adapters.rabbitmq import (
        ConsumerTopology,
        RabbitMQPublisher,
        declare_exchange,
    )
    from cqrs_ddd_advanced_core.messaging import OutboxRelay
    from cqrs_ddd_advanced_core.messaging.headers import routing_key
    from cqrs_ddd_core.adapters.sqlalchemy import SQLAlchemyOutboxStore

    exchange_name = f"bench-{time.time_ns()}"
    topology = ConsumerTopology(
        f"bench-sink-{time.time_ns()}", partitions=2, exchange=exchange_name
    )
    store = SQLAlchemyOutboxStore(persisted.engine)
    relay_ns: list[float] = []
    raw_ns: list[float] = []
    connection = await aio_pika.connect(url)
    async with connection, RabbitMQPublisher(url, exchange=exchange_name) as publisher:
        channel = await connection.channel(publisher_confirms=True)
        await topology.declare(channel)  # queues to receive (and keep) what is published
        exchange = await declare_exchange(channel, exchange_name)
        counted: dict[str, Any] = {}

        class Counting:  # stops the relay's loop once every message is confirmed
            async def publish(self, message: Any) -> None:
                await publisher.publish(message)
                counted["left"] -= 1
                if counted["left"] == 0:
                    counted["stop"].set()

        relay = OutboxRelay(store, Counting(), batch_size=BATCH, poll_interval=0.05)
        for r in range(rounds):
            await _fill(persisted, k)
            messages = await store.claim_batch(k)  # the same messages, for the raw case
            await store.release([m.message_id for m in messages])

            async def raw(messages: list[Any] = messages) -> None:
                for start in range(0, k, BATCH):
                    await asyncio.gather(
                        *(
                            exchange.publish(raw_message(m), routing_key(m), mandatory=False)
                            for m in messages[start : start + BATCH]
                        )
                    )

            async def relayed() -> None:
                # The relay's own loop (what `cqrs-ddd relay` runs), stopped once all
                # k are confirmed; it returns after marking them published.
                stop = asyncio.Event()
                counted.update(left=k, stop=stop)
                async with asyncio.timeout(300):
                    await relay.run(stop)
                if counted["left"] > 0:
                    raise RuntimeError("the relay stopped before publishing everything")

            order = [("raw", raw), ("relay", relayed)]
            for name, case in order if r % 2 == 0 else order[::-1]:
                start = time.perf_counter_ns()
                await case()
                (raw_ns if name == "raw" else relay_ns).append((time.perf_counter_ns() - start) / k)
            for queue in topology.queues:  # keep the broker's disk small
                await (await channel.get_queue(queue)).purge()
    return [
        CaseStats("relay", "OutboxRelay: PostgreSQL outbox -> RabbitMQ", k, relay_ns, "message"),
        CaseStats("raw_aio_pika", "raw aio-pika, same messages, confirms", k, raw_ns, "message"),
    ]


async def _latency(
    persisted: Any, db_url: str, url: str, seconds: float, rate: float
) -> dict[str, Any]:
    """The relay and the consumer in processes of their own, as deployed."""
    from cqrs_ddd_advanced_core.adapters.rabbitmq import ConsumerTopology, RabbitMQSubscriber

    exchange = f"bench-latency-{time.time_ns()}"
    service = f"bench-latency-{time.time_ns()}"
    await RabbitMQSubscriber(
        url, ConsumerTopology(service, partitions=16, exchange=exchange)
    ).declare()
    relay = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cqrs_ddd_advanced_core.cli.main", "relay",
        f"--database-url={db_url}", f"--broker-url={url}", f"--exchange={exchange}",
        "--poll-interval=1", "--log-level=error",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    consumer = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.latency_consumer", f"--database-url={db_url}",
        f"--broker-url={url}", f"--service={service}", f"--exchange={exchange}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert consumer.stdout is not None
    committed: dict[str, float] = {}
    consumed: dict[str, float] = {}
    sent_at: dict[str, float] = {}  # when each command was sent (it returns once committed)
    try:
        assert relay.stderr is not None
        async with asyncio.timeout(60):
            while (await consumer.stdout.readline()).strip() != b"ready":
                pass
            while b"running" not in await relay.stderr.readline():
                pass
        await asyncio.sleep(0.5)  # its first look at the outbox: it listens now
        meters = _cpu_meters(db_url, url, relay.pid, consumer.pid)
        cpu_before = {name: read() for name, read in meters.items()}
        wall = time.perf_counter()
        send = persisted.mediator.send

        async def one() -> None:
            command = persisted.command()
            sent_at[command.account_id] = time.time()
            await send(command)
            committed[command.account_id] = time.time()

        n = int(rate * seconds)
        start = time.perf_counter()
        senders = []
        for i in range(n):  # open loop: a command every 1/RATE s, whatever the others do
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            senders.append(asyncio.create_task(one()))
        await asyncio.gather(*senders)
        sent_rate = n / (time.perf_counter() - start)
        async with asyncio.timeout(120):
            while len(consumed) < n:
                line = (await consumer.stdout.readline()).split()
                if not line:
                    break
                consumed[line[0].decode()] = float(line[1])
        wall = time.perf_counter() - wall
        cpu = _cpu_per_message(meters, cpu_before, n, wall)
    finally:
        for process in (relay, consumer):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in (relay, consumer):
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
    latencies = sorted(consumed[k] - committed[k] for k in committed if k in consumed)
    quantile = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "rate_per_s": rate,
        "commands": n,
        "sent_per_s": round(sent_rate, 1),
        "consumed": len(latencies),
        "p50_ms": round(quantile[49] * 1000, 2),
        "p99_ms": round(quantile[98] * 1000, 2),
        "max_ms": round(latencies[-1] * 1000, 2),
        # What the commit's own wait adds: the command's p50 from send to its return
        # (committed), and the p50 from send to the effect.
        "command_p50_ms": _p50_ms(committed[k] - sent_at[k] for k in committed),
        "send_to_effect_p50_ms": _p50_ms(
            consumed[k] - sent_at[k] for k in committed if k in consumed
        ),
        "relay_and_consumer": "own processes: cqrs-ddd relay, benchmarks.latency_consumer",
        **cpu,
    }


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run whose p50 is the median of the runs' (the lower middle one of an even count)."""
    ranked = sorted(runs, key=lambda r: r["p50_ms"])
    return ranked[(len(ranked) - 1) // 2]


def _p50_ms(seconds: Iterable[float]) -> float:
    return round(float(statistics.median(list(seconds))) * 1000, 2)


def _cpu_meters(db_url: str, url: str, relay: int, consumer: int) -> dict[str, Any]:
    """Readers of each process's CPU seconds (a server elsewhere has none)."""
    from sqlalchemy.engine import make_url

    from benchmarks import proc_cpu

    meters: dict[str, Any] = {
        "sender": proc_cpu.self_cpu,
        "postgres": proc_cpu.listener_tree(make_url(db_url).port or 5432),
        "relay": lambda: proc_cpu.process_cpu(relay),
        "rabbitmq": proc_cpu.listener_tree(make_url(url).port or 5672),
        "consumer": lambda: proc_cpu.process_cpu(consumer),
    }
    return {name: read for name, read in meters.items() if read is not None}


def _cpu_per_message(
    meters: dict[str, Any], before: dict[str, float | None], n: int, wall: float
) -> dict[str, Any]:
    """CPU milliseconds per message of each process, from the first send to the last effect."""
    spent = {}
    for name, read in meters.items():
        start, end = before[name], read()
        if start is not None and end is not None:
            spent[name] = end - start
    total = sum(spent.values())
    return {
        "cpu_ms_per_message": {
            **{name: round(seconds * 1000 / n, 3) for name, seconds in spent.items()},
            "total": round(total * 1000 / n, 3),
        },
        "cores_busy": round(total / wall, 2),  # average over the run, of the machine's
        "cores_on_machine": os.cpu_count(),
        "seconds_to_last_effect": round(wall, 2),
    }


async def run(cfg: Config) -> WorkloadResult:
    from benchmarks.persisted import build_persisted
    from benchmarks.pg import database, server_settings
    from benchmarks.rabbitmq import broker
    from cqrs_ddd_core.adapters.sqlalchemy import create_engine

    configure_filtered()
    rounds = cfg.rounds if cfg.quick else max(cfg.rounds // 3, 5)
    k = 200 if cfg.quick else 2000
    seconds = 1.0 if cfg.quick else 6.0
    async with database() as db, broker() as (url, where):
        settings: dict[str, Any] = {
            "postgres": {"server": db.server, **await server_settings(db.url)},
            "rabbitmq": where,
            "batch_size": BATCH,
            "messages_per_round": k,
            "latency_rate_per_s": RATE,
        }
        engine = create_engine(db.url, pool_size=12)
        try:
            persisted = build_persisted(engine, "msg")
            cases = await _relay_vs_raw(persisted, url, rounds, k)
            await _analyze(engine)
            at_rate = []
            for repeat in range(1 if cfg.quick else RUNS_AT_RATE):
                persisted = build_persisted(engine, f"lat{int(RATE)}-{repeat}")
                at_rate.append(await _latency(persisted, db.url, url, seconds, RATE))
            runs = [_median_run(at_rate)]
            for rate in () if cfg.quick else LOWER_RATES:
                persisted = build_persisted(engine, f"lat{int(rate)}")
                runs.append(await _latency(persisted, db.url, url, seconds, rate))
        finally:
            await engine.dispose()
    result = WorkloadResult(NAME, TITLE, cases=cases, settings=settings)
    relay, raw = cases
    result.ratios = [
        RatioStats(
            "relay_throughput_vs_raw",
            "raw_aio_pika",
            "relay",
            [a / b for a, b in zip(raw.per_op_ns, relay.per_op_ns, strict=True)],
            "relay throughput / raw aio-pika's (same round)",
        )
    ]
    latency = runs[0]
    under = [r["rate_per_s"] for r in runs if r["p50_ms"] < 20.0]
    result.figures = {
        "commit_to_consumer_p50_ms": latency["p50_ms"],
        "commit_to_consumer_p99_ms": latency["p99_ms"],
        "latency_run": latency,  # the median run at RATE (by p50)
        "runs_at_rate": [
            {
                "p50_ms": r["p50_ms"],
                "p99_ms": r["p99_ms"],
                "cpu_ms_per_message": r["cpu_ms_per_message"]["total"],
                "cores_busy": r["cores_busy"],
            }
            for r in at_rate
        ],
        "latency_by_rate": {
            str(r["rate_per_s"]): {
                k: r[k]
                for k in (
                    "sent_per_s",
                    "p50_ms",
                    "p99_ms",
                    "command_p50_ms",
                    "send_to_effect_p50_ms",
                    "cpu_ms_per_message",
                )
                if k in r
            }
            for r in runs
        },
        "p50_under_20_ms_at_rates": under,
    }
    return summarize(result, TARGETS)
