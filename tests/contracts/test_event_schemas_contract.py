"""Versioned event schemas on every adapter: rows written in an old shape, read by new code."""

from __future__ import annotations

from typing import Any

import pytest

from cqrs_ddd_advanced_core.domain import EventSchemaVersionError
from cqrs_ddd_advanced_core.event_sourcing import (
    EventSourcedAggregate,
    EventSourcedRepository,
    UpcasterRegistry,
    UpcastingEventStore,
)
from cqrs_ddd_core import DomainEvent
from tests.support.backends import Backend


class OrderPlacedV1(DomainEvent):
    """The shape the old code wrote."""

    event_type = "OrderPlaced"
    total: int


class OrderPlaced(DomainEvent):
    """Today's shape: v3."""

    total_cents: int
    currency: str
    schema_version: int = 3


class Order(EventSourcedAggregate):
    total_cents: int = 0
    currency: str = ""

    def apply_OrderPlaced(self, event: OrderPlaced) -> None:
        self.total_cents = event.total_cents
        self.currency = event.currency


def registry() -> UpcasterRegistry:
    upcasters = UpcasterRegistry()

    @upcasters.step("OrderPlaced", from_version=1)
    def add_currency(payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "currency": "EUR"}

    @upcasters.step("OrderPlaced", from_version=2)
    def to_cents(payload: dict[str, Any]) -> dict[str, Any]:
        return {"total_cents": payload["total"] * 100, "currency": payload["currency"]}

    upcasters.register_event(OrderPlaced)
    return upcasters


async def write_old_and_new(backend: Backend) -> None:
    uow = backend.uow_factory()
    await backend.event_store.append(
        "Order", "o-old", [OrderPlacedV1(total=7)], expected_version=0, uow=uow
    )
    await backend.event_store.append(
        "Order",
        "o-new",
        [OrderPlaced(total_cents=250, currency="USD")],
        expected_version=0,
        uow=uow,
    )
    await uow.commit()


async def test_the_repository_reads_old_rows_in_the_current_shape(backend: Backend) -> None:
    await write_old_and_new(backend)
    repository = EventSourcedRepository(
        backend.event_store, Order, event_types=[OrderPlaced], upcaster=registry()
    )

    old = await repository.load("o-old")
    new = await repository.load("o-new")

    assert (old.total_cents, old.currency, old.version) == (700, "EUR", 1)
    assert (new.total_cents, new.currency) == (250, "USD")


async def test_read_all_and_load_stream_through_the_upcasting_store_are_current(
    backend: Backend,
) -> None:
    await write_old_and_new(backend)
    store = UpcastingEventStore(backend.event_store, registry())

    everything = await store.read_all()
    stream = await store.load_stream("Order", "o-old")

    assert [(e.schema_version, e.payload) for e in everything] == [
        (3, {"total_cents": 700, "currency": "EUR"}),
        (3, {"total_cents": 250, "currency": "USD"}),
    ]
    assert stream[0].payload == {"total_cents": 700, "currency": "EUR"}
    assert await store.latest_position() == 2


async def test_the_stored_rows_keep_their_old_shape(backend: Backend) -> None:
    await write_old_and_new(backend)
    store = UpcastingEventStore(backend.event_store, registry())
    await store.read_all()
    await store.load_stream("Order", "o-old")

    raw = await backend.event_store.load_stream("Order", "o-old")

    assert (raw[0].schema_version, raw[0].payload) == (1, {"total": 7})


async def test_appends_through_the_upcasting_store_reach_the_inner_store(
    backend: Backend,
) -> None:
    store = UpcastingEventStore(backend.event_store, registry())
    uow = backend.uow_factory()
    await store.append(
        "Order", "o-1", [OrderPlaced(total_cents=1, currency="EUR")], expected_version=0, uow=uow
    )
    await uow.commit()

    assert [e.schema_version for e in await backend.event_store.load_stream("Order", "o-1")] == [3]


async def test_a_stored_version_with_no_path_fails_every_read_path_with_a_typed_error(
    backend: Backend,
) -> None:
    await write_old_and_new(backend)
    gap = UpcasterRegistry()
    gap.register("OrderPlaced", 2, lambda payload: payload)
    gap.register_event(OrderPlaced)
    repository = EventSourcedRepository(
        backend.event_store, Order, event_types=[OrderPlaced], upcaster=gap
    )

    with pytest.raises(EventSchemaVersionError) as caught:
        await repository.load("o-old")
    with pytest.raises(EventSchemaVersionError):
        await UpcastingEventStore(backend.event_store, gap).read_all()

    assert (caught.value.stored_version, caught.value.missing_step) == (1, 1)
