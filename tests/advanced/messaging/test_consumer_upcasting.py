"""Consumer-side upcasting: a delivery written at an older schema reaches the handler at
its type's current one; one that cannot be upcast fails before anything is written."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from cqrs_ddd_advanced_core.domain.exceptions import EventSchemaVersionError
from cqrs_ddd_advanced_core.event_sourcing import UpcasterRegistry
from cqrs_ddd_advanced_core.messaging import (
    IncomingMessage,
    MessageConsumer,
    Outcome,
    upcast_with,
)
from cqrs_ddd_advanced_core.messaging.headers import decode, encode_headers
from cqrs_ddd_core import DomainEvent
from cqrs_ddd_core.adapters.memory import InMemoryInboxStore
from cqrs_ddd_core.persistence import InboxTransaction, OutboxMessage


class OrderPlaced(DomainEvent):
    """``OrderPlaced`` as the consumer's code knows it (v3)."""

    total_cents: int
    currency: str
    schema_version: int = 3


def registry() -> UpcasterRegistry:
    upcasters = UpcasterRegistry()

    @upcasters.step("OrderPlaced", from_version=1)
    def add_currency(payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "currency": "EUR"}

    @upcasters.step("OrderPlaced", from_version=2)
    def cents(payload: dict[str, Any]) -> dict[str, Any]:
        rest = {k: v for k, v in payload.items() if k != "total"}
        return {"total_cents": payload["total"] * 100, **rest}

    upcasters.register_events([OrderPlaced])
    return upcasters


def delivery(payload: dict[str, Any], schema_version: int | None, message_id: str = "m1") -> Any:
    """What the subscriber hands on: decoded from the headers a relay publishes."""
    sent = OutboxMessage(
        message_id=message_id,
        message_type="OrderPlaced",
        payload=payload,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        aggregate_type="Order",
        aggregate_id="o-1",
        aggregate_version=1,
        schema_version=schema_version,
    )
    return decode(message_id, json.dumps(payload).encode(), encode_headers(sent, {}))


class Handler:
    def __init__(self) -> None:
        self.seen: list[IncomingMessage] = []

    async def __call__(self, message: IncomingMessage, tx: InboxTransaction) -> None:
        self.seen.append(message)


def consumer() -> tuple[MessageConsumer, Handler, InMemoryInboxStore]:
    inbox, handler = InMemoryInboxStore(), Handler()
    built = MessageConsumer("billing", inbox, upcaster=upcast_with(registry()))
    built.subscribe("OrderPlaced", handler)
    return built, handler, inbox


async def test_an_old_schema_delivery_reaches_the_handler_at_the_current_version() -> None:
    built, handler, _ = consumer()
    assert await built.process(delivery({"total": 3}, 1)) is Outcome.HANDLED
    (seen,) = handler.seen
    assert seen.payload == {"total_cents": 300, "currency": "EUR"}
    assert seen.schema_version == 3
    assert "upcasting" in built.describe()


async def test_a_current_or_unversioned_delivery_is_handed_on_as_it_is() -> None:
    built, handler, _ = consumer()
    current = delivery({"total_cents": 5, "currency": "USD"}, 3, "m1")
    unversioned = delivery({"total": 7}, None, "m2")  # a producer that said nothing
    await built.process(current)
    await built.process(unversioned)
    assert handler.seen == [current, unversioned]


async def test_a_delivery_that_cannot_be_upcast_fails_and_nothing_is_recorded() -> None:
    built, handler, inbox = consumer()
    newer = delivery({"total_cents": 5, "currency": "USD", "vat": 1}, 4)  # newer than the code
    with pytest.raises(EventSchemaVersionError):
        await built.process(newer)
    assert handler.seen == []
    assert not await inbox.has_handled("billing", newer.message_id)  # retried, not skipped
