"""A consumer process SIGKILLed right after a batch committed, before its acks: the
next one gets the batch again, the inbox skips what committed, nothing is lost."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cqrs_ddd_advanced_core.adapters.rabbitmq import (
    RabbitMQPublisher,
    RabbitMQSubscriber,
    queue_depths,
)
from cqrs_ddd_advanced_core.messaging import OutboxRelay
from tests.cli.demo_process import _environment
from tests.support.chaos_consumer import effects, effects_metadata, topology
from tests.support.messaging import Shop
from tests.support.rabbitmq import unique_name

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[3]


def consumer(
    database_url: str, broker_url: str, service: str, exchange: str, *kill: str
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.chaos_consumer",
            f"--database-url={database_url}",
            f"--broker-url={broker_url}",
            f"--service={service}",
            f"--exchange={exchange}",
            *(f"--kill-after-commit-of={k}" for k in kill),
        ],
        cwd=ROOT,
        env={**_environment(), "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _inbox_rows(engine: AsyncEngine, service: str) -> int:
    async with engine.connect() as conn:
        count = await conn.exec_driver_sql(
            "SELECT count(*) FROM inbox WHERE consumer = $1", (service,)
        )
        return int(count.scalar() or 0)


async def _depth(url: str, service: str, exchange: str) -> int:
    """Messages ready in the service's partition queues (unacknowledged ones not counted)."""
    depths = await queue_depths(url, topology(service, exchange).queues)
    return sum(depths.values())


@pytest.mark.timeout(180)
async def test_a_consumer_killed_between_a_batchs_commit_and_its_acks_loses_and_repeats_nothing(
    pg_engine: AsyncEngine, postgres_database_url: str, rabbitmq_url: str
) -> None:
    async with pg_engine.begin() as conn:
        await conn.run_sync(effects_metadata.drop_all)
        await conn.run_sync(effects_metadata.create_all)
    shop = Shop(pg_engine)
    exchange, service = unique_name("events"), unique_name("billing")
    await RabbitMQSubscriber(rabbitmq_url, topology(service, exchange)).declare()
    for i in range(30):
        await shop.place(f"o-{i}", items=3)  # 120 events, in the queues before a consumer runs
    published: list[str] = []
    async with RabbitMQPublisher(rabbitmq_url, exchange=exchange) as publisher:
        relay = OutboxRelay(shop.outbox, publisher, batch_size=500)
        while (result := await relay.run_once()).published:
            published.extend(result.published)
    assert len(published) == 120
    victim = published[len(published) // 2]
    first = consumer(postgres_database_url, rabbitmq_url, service, exchange, victim)
    try:
        assert await asyncio.to_thread(first.wait, 60) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
    # The batch with the victim committed (its inbox rows and effects), and none of it
    # was acknowledged: it is all in the queues again.
    committed = await _inbox_rows(pg_engine, service)
    assert 0 < committed <= 120
    waiting = await _depth(rabbitmq_url, service, exchange)
    assert waiting > 120 - committed  # the committed batch came back: more than what is left
    second = consumer(postgres_database_url, rabbitmq_url, service, exchange)
    try:
        async with asyncio.timeout(90):  # every delivery, the redelivered batch included, acked
            while await _inbox_rows(pg_engine, service) < 120 or await _depth(  # noqa: ASYNC110
                rabbitmq_url, service, exchange
            ):
                await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # what it had fetched ahead (duplicates): skipped and acked
    finally:
        second.send_signal(signal.SIGTERM)
        await asyncio.to_thread(second.wait, 30)
    assert await _depth(rabbitmq_url, service, exchange) == 0
    async with pg_engine.connect() as conn:
        rows = (
            await conn.execute(
                select(effects.c.message_id, effects.c.order_id, effects.c.version).order_by(
                    effects.c.seq
                )
            )
        ).all()
        total = await conn.scalar(select(func.count()).select_from(effects))
    assert total == 120
    assert sorted(r.message_id for r in rows) == sorted(published)  # each effect once
    seen: dict[str, int] = {}
    for row in rows:  # each order's events committed in version order
        assert row.version == seen.get(row.order_id, 0) + 1
        seen[row.order_id] = row.version
