"""THE PROOF: 10,000 events through relays and consumers that are SIGKILLed at random.

While 2,000 orders (10,000 events) are placed on PostgreSQL by 8 concurrent senders,
two ``cqrs-ddd relay`` processes publish the outbox and two consumer processes
(tests/support/chaos_consumer.py) apply each event to their table through the inbox.
Meanwhile a relay is SIGKILLed (and restarted) 20 times, a consumer 10 times, and the
broker is restarted once. Five orders are poison: the consumer's handler refuses them,
a fault injected on purpose. Then, after the system drained:

* 0 events lost: every outbox message is published, and every non-poison event has
  its effect;
* exactly once: no event has two effects (the effects table has no unique
  constraint; only the inbox prevents a second one);
* every order's effects were committed in version order;
* dead letters only where injected: the dead-letter queue holds every poison event
  and nothing else (a poison event the relay published twice, killed between the
  confirm and marking it, is dead-lettered twice), the outbox holds none.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import aio_pika
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cqrs_ddd_advanced_core.adapters.rabbitmq import RabbitMQSubscriber, queue_depths
from tests.cli.demo_process import _environment, demo_command
from tests.support.chaos_consumer import effects, effects_metadata, topology
from tests.support.messaging import Shop
from tests.support.rabbitmq import RabbitMQServer, unique_name

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
ORDERS = 2_000
EVENTS_PER_ORDER = 5  # OrderPlaced + 4 ItemAdded
POISON = 5
RELAY_KILLS = 20
CONSUMER_KILLS = 10
SENDERS = 8


class Fleet:
    """Relay and consumer processes, restarted after each kill."""

    def __init__(self, database_url: str, broker_url: str, exchange: str, service: str) -> None:
        self.database_url, self.broker_url = database_url, broker_url
        self.exchange, self.service = exchange, service
        self.env = _environment()
        self.relays = [self._relay() for _ in range(2)]
        self.consumers = [self._consumer() for _ in range(2)]
        self.kills = {"relay": 0, "consumer": 0}

    def _relay(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                *demo_command(),
                "relay",
                f"--database-url={self.database_url}",
                f"--broker-url={self.broker_url}",
                f"--exchange={self.exchange}",
                "--claim-timeout=3",
                "--backoff-max=1",
                "--max-attempts=1000",
                "--poll-interval=0.5",
                "--log-level=error",
                "--connect-timeout=5",
            ],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _consumer(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.chaos_consumer",
                f"--database-url={self.database_url}",
                f"--broker-url={self.broker_url}",
                f"--service={self.service}",
                f"--exchange={self.exchange}",
            ],
            cwd=ROOT,
            env={**self.env, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def kill(self, kind: str, rng: random.Random) -> None:
        pool = self.relays if kind == "relay" else self.consumers
        index = rng.randrange(len(pool))
        pool[index].send_signal(signal.SIGKILL)
        pool[index].wait(timeout=30)
        pool[index] = self._relay() if kind == "relay" else self._consumer()
        self.kills[kind] += 1

    def revive(self) -> int:
        """Restart what exited on its own, as a supervisor would: a relay started while
        the broker is down exits at once (``cqrs-ddd relay`` fails fast at start)."""
        revived = 0
        for pool, start in ((self.relays, self._relay), (self.consumers, self._consumer)):
            for index, process in enumerate(pool):
                if process.poll() is not None:
                    pool[index] = start()
                    revived += 1
        return revived

    def stop(self) -> None:
        for process in [*self.relays, *self.consumers]:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in [*self.relays, *self.consumers]:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


async def dead_lettered(url: str, queue_name: str) -> list[tuple[str, str]]:
    """``(message id, aggregate id)`` of each message in the dead-letter queue."""
    found = []
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, durable=True)
        while (message := await queue.get(fail=False)) is not None:
            found.append((str(message.message_id), str(message.headers["cqrs-aggregate-id"])))
    return found


@pytest.mark.timeout(480)
async def test_10000_events_survive_killed_relays_and_consumers_and_a_broker_restart(
    pg_engine: AsyncEngine,
    postgres_database_url: str,
    rabbitmq_url: str,
    rabbitmq_server: RabbitMQServer,
) -> None:
    async with pg_engine.begin() as conn:
        await conn.run_sync(effects_metadata.drop_all)
        await conn.run_sync(effects_metadata.create_all)
    exchange, service = unique_name("events"), unique_name("chaos")
    await RabbitMQSubscriber(rabbitmq_url, topology(service, exchange)).declare()
    shop = Shop(pg_engine)
    orders = [f"o-{i}" for i in range(ORDERS - POISON)] + [f"poison-{i}" for i in range(POISON)]
    rng = random.Random(12)
    rng.shuffle(orders)
    fleet = Fleet(postgres_database_url, rabbitmq_url, exchange, service)
    sent = 0
    started = time.monotonic()

    async def sender(mine: list[str]) -> None:
        nonlocal sent
        for order in mine:
            events = await shop.place(order, items=EVENTS_PER_ORDER - 1)
            sent += events  # not `sent += await ...`: that reads `sent` before the await

    async def chaos() -> None:
        restarted = False
        # Spread the kills over the sending, which takes some 20-40 s here.
        while fleet.kills["relay"] < RELAY_KILLS or fleet.kills["consumer"] < CONSUMER_KILLS:
            await asyncio.sleep(rng.uniform(0.3, 1.2))
            if not restarted and sent >= ORDERS * EVENTS_PER_ORDER * 0.4:
                restarted = True
                await asyncio.to_thread(rabbitmq_server.restart)
                continue
            left = {
                "relay": RELAY_KILLS - fleet.kills["relay"],
                "consumer": CONSUMER_KILLS - fleet.kills["consumer"],
            }
            kind = rng.choices(list(left), weights=list(left.values()))[0]
            await asyncio.to_thread(fleet.kill, kind, rng)
            fleet.revive()
        if not restarted:
            await asyncio.to_thread(rabbitmq_server.restart)

    expected_effects = (ORDERS - POISON) * EVENTS_PER_ORDER
    dead_queue = topology(service, exchange).dead_letter_queue

    async def drain(last: dict[str, object]) -> None:
        async with asyncio.timeout(180):  # claims of killed relays expire after 3 s
            while True:
                async with pg_engine.connect() as conn:
                    done = (await conn.execute(select(func.count()).select_from(effects))).scalar()
                unpublished = await shop.outbox.oldest_unpublished_at()
                dead = sum((await queue_depths(rabbitmq_url, [dead_queue])).values())
                last.update(effects=done, unpublished_since=unpublished, dead=dead)
                # A poison message the relay published twice (killed between the
                # confirm and marking it) is dead-lettered twice: at least once.
                if done >= expected_effects and unpublished is None and dead >= POISON * 5:
                    return
                fleet.revive()
                await asyncio.sleep(0.5)

    try:
        await asyncio.gather(chaos(), *(sender(orders[i::SENDERS]) for i in range(SENDERS)))
        assert sent == ORDERS * EVENTS_PER_ORDER == 10_000
        last: dict[str, object] = {}
        try:
            await drain(last)
        except TimeoutError:
            pytest.fail(f"not drained in 180 s: {last}")
    finally:
        fleet.stop()
    elapsed = time.monotonic() - started
    assert fleet.kills == {"relay": RELAY_KILLS, "consumer": CONSUMER_KILLS}

    async with pg_engine.connect() as conn:
        rows = (
            await conn.execute(
                select(effects.c.message_id, effects.c.order_id, effects.c.version).order_by(
                    effects.c.seq
                )
            )
        ).all()
        published = (
            await conn.exec_driver_sql("SELECT count(*) FROM outbox WHERE status = 'published'")
        ).scalar()
        poison_ids = {
            row[0]
            for row in await conn.exec_driver_sql(
                "SELECT message_id FROM outbox WHERE aggregate_id LIKE 'poison-%'"
            )
        }
    assert published == 10_000  # 0 lost on the way to the broker; no outbox dead letter
    message_ids = [row[0] for row in rows]
    assert len(message_ids) == len(set(message_ids)) == expected_effects  # exactly once
    versions: dict[str, list[int]] = defaultdict(list)
    for _, order, version in rows:
        versions[order].append(version)
    assert len(versions) == ORDERS - POISON
    disordered = {o: v for o, v in versions.items() if v != [1, 2, 3, 4, 5]}
    assert not disordered  # every stream in version order
    poisoned = await dead_lettered(rabbitmq_url, topology(service, exchange).dead_letter_queue)
    assert len(poison_ids) == POISON * 5
    assert {message_id for message_id, _ in poisoned} == poison_ids  # each poison event
    assert all(order.startswith("poison-") for _, order in poisoned)  # and nothing else
    print(f"chaos run: 10,000 events in {elapsed:.1f} s, {fleet.kills}", file=sys.stderr)
