"""``cqrs-ddd relay`` and ``cqrs-ddd outbox`` as a user runs them (subprocesses)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from pathlib import Path

from cqrs_ddd_advanced_core.adapters.rabbitmq import ConsumerTopology, RabbitMQSubscriber
from cqrs_ddd_core.adapters.sqlalchemy import SQLAlchemyOutboxStore
from tests.cli.demo_process import _environment, demo_command
from tests.support.backends import sqlite_engine
from tests.support.messaging import Billing, Shop, create_billing_tables
from tests.support.rabbitmq import unique_name


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*demo_command(), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_environment(),
        check=False,
    )


async def test_the_relay_command_publishes_the_outbox_and_stops_cleanly_on_sigterm(
    tmp_path: Path, rabbitmq_url: str
) -> None:
    (tmp_path / "shop").mkdir()
    (tmp_path / "billing").mkdir()
    exchange = unique_name("events")
    topology = ConsumerTopology(unique_name("billing"), partitions=2, exchange=exchange)
    subscriber = RabbitMQSubscriber(rabbitmq_url, topology)
    await subscriber.declare()
    async with (
        sqlite_engine(tmp_path / "shop") as shop_db,
        sqlite_engine(tmp_path / "billing") as billing_db,
    ):
        await create_billing_tables(billing_db)
        shop, billing = Shop(shop_db), Billing(billing_db)
        total = await shop.place("o-1", items=2) + await shop.place("o-2")
        relay = await asyncio.create_subprocess_exec(
            *demo_command(),
            "relay",
            "--database-url",
            str(shop_db.url),
            "--broker-url",
            rabbitmq_url,
            "--exchange",
            exchange,
            "--poll-interval",
            "0.2",
            stderr=asyncio.subprocess.PIPE,
            env=_environment(),
        )
        stop = asyncio.Event()
        consuming = asyncio.create_task(subscriber.run(billing.consumer.process, stop))
        try:
            await billing.wait_for(total)
        finally:
            relay.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                _, stderr = await relay.communicate()
            stop.set()
            await consuming
        assert relay.returncode == 0, stderr.decode()
        assert sorted(await billing.stored()) == [("o-1", 1), ("o-1", 2), ("o-1", 3), ("o-2", 1)]
        assert await SQLAlchemyOutboxStore(shop_db).oldest_unpublished_at() is None


def test_the_relay_command_fails_fast_when_the_broker_is_unreachable(tmp_path: Path) -> None:
    result = cli(
        "relay",
        "--database-url",
        f"sqlite:///{tmp_path / 'shop.db'}",
        "--broker-url",
        "amqp://guest:guest@127.0.0.1:1/",
        "--connect-timeout",
        "2",
    )
    assert result.returncode == 1
    assert "RabbitMQ is unreachable" in result.stderr


async def test_dead_letters_are_listed_and_requeued_by_command(tmp_path: Path) -> None:
    async with sqlite_engine(tmp_path) as engine:
        shop = Shop(engine)
        await shop.place("o-1", items=1)
        first, second = await shop.outbox.claim_batch(10)
        await shop.outbox.mark_dead(first.message_id, "PublishError: nack")
        await shop.outbox.release([second.message_id])
        url = f"sqlite:///{tmp_path / 'cqrs.db'}"

        listed = await asyncio.to_thread(
            cli, "outbox", "dead-letters", "--database-url", url, "--json"
        )
        assert listed.returncode == 0, listed.stderr
        (row,) = [json.loads(line) for line in listed.stdout.splitlines()]
        assert row["message_id"] == first.message_id
        assert row["aggregate_id"] == "o-1"
        assert row["aggregate_version"] == 1
        assert row["last_error"] == "PublishError: nack"

        unknown = await asyncio.to_thread(cli, "outbox", "requeue", "--database-url", url, "nope")
        assert unknown.stdout.strip() == "requeued 0 dead letters"
        requeued = await asyncio.to_thread(
            cli, "outbox", "requeue", "--database-url", url, first.message_id
        )
        assert requeued.returncode == 0
        assert requeued.stdout.strip() == "requeued 1 dead letter"
        assert await shop.outbox.dead_letters() == []
        claimed = await shop.outbox.claim_batch(10)
        assert [m.message_id for m in claimed] == [first.message_id, second.message_id]


def test_requeue_needs_message_ids_or_all(tmp_path: Path) -> None:
    result = cli("outbox", "requeue", "--database-url", f"sqlite:///{tmp_path / 'x.db'}")
    assert result.returncode == 2
    assert "--all" in result.stderr
