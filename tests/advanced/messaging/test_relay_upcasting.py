"""The relay publishes outbox rows at their type's current schema version, on a SQLite
file and on PostgreSQL, to a real RabbitMQ; the stored rows keep what was written."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from cqrs_ddd_advanced_core.adapters.rabbitmq import RabbitMQPublisher
from cqrs_ddd_advanced_core.event_sourcing import UpcasterRegistry
from cqrs_ddd_advanced_core.messaging import OutboxRelay
from cqrs_ddd_advanced_core.messaging.headers import SCHEMA_VERSION, decode
from cqrs_ddd_advanced_core.outbox import message_from_event
from cqrs_ddd_core import DomainEvent
from cqrs_ddd_core.adapters.sqlalchemy import SQLAlchemyOutboxStore, SQLAlchemyUnitOfWork
from cqrs_ddd_core.persistence import OutboxStatus
from tests.support.backends import sqlite_engine
from tests.support.postgres import empty_pg_engine
from tests.support.rabbitmq import unique_name

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class OldOrderPlaced(DomainEvent):
    """``OrderPlaced`` as the code before the deploy wrote it (v1)."""

    event_type = "OrderPlaced"
    total: int


class OrderPlaced(DomainEvent):
    """``OrderPlaced`` as the code after the deploy knows it (v3)."""

    total_cents: int
    currency: str
    schema_version: int = 3


class OldRefunded(DomainEvent):
    event_type = "Refunded"
    amount: int


class Refunded(DomainEvent):
    amount_cents: int
    schema_version: int = 2  # and no step from v1: a v1 row has no path


def new_code_registry() -> UpcasterRegistry:
    registry = UpcasterRegistry()

    @registry.step("OrderPlaced", from_version=1)
    def add_currency(payload: dict[str, Any]) -> dict[str, Any]:
        payload["currency"] = "EUR"
        return payload

    @registry.step("OrderPlaced", from_version=2)
    def cents(payload: dict[str, Any]) -> dict[str, Any]:
        return {"total_cents": payload.pop("total") * 100, **payload}

    registry.register_events([OrderPlaced, Refunded])
    return registry


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def outbox(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """The SQL outbox on a SQLite file or on the session's PostgreSQL database."""
    if request.param == "sqlite":
        async with sqlite_engine(tmp_path) as engine:
            yield SQLAlchemyOutboxStore(engine)
    else:
        url = request.getfixturevalue("postgres_database_url")
        async with empty_pg_engine(url) as engine:
            yield SQLAlchemyOutboxStore(engine)


async def write(outbox: SQLAlchemyOutboxStore, *events: DomainEvent) -> list[str]:
    """Commit ``events`` to the outbox as the outbox middleware does."""
    uow = SQLAlchemyUnitOfWork(outbox.engine)
    messages = [message_from_event(e, created_at=T0) for e in events]
    await outbox.enqueue(messages, uow=uow)
    await uow.commit()
    return [m.message_id for m in messages]


def placed(order: str, total: int) -> OldOrderPlaced:
    return OldOrderPlaced(
        aggregate_type="Order", aggregate_id=order, aggregate_version=1, total=total
    )


class Tap:
    """A queue bound to every routing key of the exchange: what the broker received."""

    def __init__(self, url: str, exchange: str) -> None:
        self.url, self.exchange = url, exchange

    async def __aenter__(self) -> Tap:
        self.connection = await aio_pika.connect(self.url)
        channel = await self.connection.channel()
        events = await channel.declare_exchange(
            self.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        self.queue = await channel.declare_queue(unique_name("tap"), exclusive=True)
        await self.queue.bind(events, "#")
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.connection.close()

    async def take(self, count: int) -> list[aio_pika.abc.AbstractIncomingMessage]:
        """``count`` messages (bounded wait), then check that no other one is there."""
        taken: list[aio_pika.abc.AbstractIncomingMessage] = []
        async with asyncio.timeout(30):
            while len(taken) < count:
                message = await self.queue.get(fail=False)
                if message is None:
                    await asyncio.sleep(0.05)
                    continue
                await message.ack()
                taken.append(message)
        assert await self.queue.get(fail=False) is None  # confirmed publishes are all here
        return taken


def bodies(messages: Sequence[aio_pika.abc.AbstractIncomingMessage]) -> dict[str, Any]:
    return {m.message_id or "": json.loads(m.body) for m in messages}


async def test_a_row_written_at_v1_reaches_the_broker_at_v3_and_stays_v1_in_the_outbox(
    outbox: SQLAlchemyOutboxStore, rabbitmq_url: str
) -> None:
    (message_id,) = await write(outbox, placed("o-1", 12))
    exchange = unique_name("events")

    async with (
        Tap(rabbitmq_url, exchange) as tap,
        RabbitMQPublisher(rabbitmq_url, exchange=exchange) as publisher,
    ):
        relay = OutboxRelay(outbox, publisher, upcaster=new_code_registry().upcast_message)
        result = await relay.run_once()
        (received,) = await tap.take(1)

    assert result.published == [message_id]
    assert received.message_id == message_id
    assert json.loads(received.body) == {"total_cents": 1200, "currency": "EUR"}
    assert received.headers[SCHEMA_VERSION] == 3
    incoming = decode(received.message_id, received.body, received.headers)
    assert incoming.schema_version == 3
    assert OrderPlaced.model_validate(incoming.payload).total_cents == 1200
    stored = await outbox.get(message_id)
    assert stored is not None
    assert stored.status is OutboxStatus.PUBLISHED
    assert (stored.payload, stored.schema_version) == ({"total": 12}, 1)


async def test_a_row_with_no_upcasting_path_is_dead_lettered_naming_the_error(
    outbox: SQLAlchemyOutboxStore, rabbitmq_url: str
) -> None:
    refund = OldRefunded(
        aggregate_type="Order", aggregate_id="o-bad", aggregate_version=1, amount=3
    )
    after_it = OldOrderPlaced(
        aggregate_type="Order", aggregate_id="o-bad", aggregate_version=2, total=1
    )
    bad, held = await write(outbox, refund, after_it)
    (other,) = await write(outbox, placed("o-ok", 5))  # another stream, written later
    exchange = unique_name("events")
    clock = Clock()

    async with (
        Tap(rabbitmq_url, exchange) as tap,
        RabbitMQPublisher(rabbitmq_url, exchange=exchange) as publisher,
    ):
        relay = OutboxRelay(
            outbox,
            publisher,
            max_attempts=2,
            upcaster=new_code_registry().upcast_message,
            clock=clock,
        )
        first = await relay.run_once()
        failed_once = await outbox.get(bad)
        clock.now += timedelta(hours=1)  # past the backoff
        second = await relay.run_once()
        third = await relay.run_once()
        received = await tap.take(1)

    assert (first.published, first.failed) == ([other], [bad])
    assert failed_once is not None
    assert (failed_once.status, failed_once.attempts) == (OutboxStatus.FAILED, 1)
    assert (second.published, second.failed) == ([], [bad])
    assert third.processed == 0  # the dead letter holds its stream back
    assert bodies(received) == {other: {"total_cents": 500, "currency": "EUR"}}
    (dead,) = await outbox.dead_letters()
    assert dead.message_id == bad
    assert (dead.attempts, dead.payload, dead.schema_version) == (2, {"amount": 3}, 1)
    assert (dead.last_error or "").startswith("EventSchemaVersionError: ")
    assert f"Refunded stored at schema v1 (event {bad})" in (dead.last_error or "")
    assert "no upcaster is registered from v1 to v2" in (dead.last_error or "")
    waiting = await outbox.get(held)
    assert waiting is not None
    assert waiting.status is OutboxStatus.PENDING
