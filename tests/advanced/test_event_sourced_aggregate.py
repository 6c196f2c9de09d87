"""Event-sourced aggregates: apply_<Event> handlers, strictness, rebuilding from a stream."""

from __future__ import annotations

import dataclasses

import pytest

from cqrs_ddd_advanced_core import (
    EventSourcedMediatorFactory,
    EventSourcedRepository,
    EventSourcingConfigurationError,
    InvalidEventHandlerError,
    MissingEventHandlerError,
)
from cqrs_ddd_advanced_core.event_sourcing import EventSourcedAggregate, apply_method_name
from cqrs_ddd_core.domain import DomainEvent
from cqrs_ddd_core.exceptions import RecordNotFoundError
from cqrs_ddd_core.persistence import StoredEvent
from tests.advanced.domain import (
    ORDER_EVENTS,
    AddItem,
    ItemAdded,
    Order,
    OrderPlaced,
    PlaceOrder,
    World,
)


class Renamed(DomainEvent):
    pass


def test_raise_event_records_and_applies_with_the_next_version() -> None:
    order = Order.place("o-1", "c-1", 10)
    order.add_item("book", 2)

    assert (order.version, order.original_version) == (2, 0)
    assert order.items == ["bookx2"]
    assert [e.aggregate_version for e in order.pending_events] == [1, 2]
    assert apply_method_name(ItemAdded) == "apply_ItemAdded"


def test_an_event_without_apply_method_raises_in_strict_mode_and_is_skipped_otherwise() -> None:
    order = Order.place("o-1", "c-1", 10)

    with pytest.raises(MissingEventHandlerError) as info:
        order.raise_event(Renamed())

    assert (info.value.aggregate_type, info.value.event_type) == ("Order", "Renamed")
    assert info.value.method_name == "apply_Renamed"

    class Tolerant(Order):
        strict_apply = False

    tolerant = Tolerant.place("t-1", "c", 1)
    tolerant.raise_event(Renamed())
    assert tolerant.version == 2


def test_an_apply_method_with_the_wrong_signature_is_refused_when_the_class_is_defined() -> None:
    with pytest.raises(InvalidEventHandlerError) as info:

        class Broken(EventSourcedAggregate):
            def apply_OrderPlaced(self) -> None:
                pass

    assert info.value.event_type == "OrderPlaced"
    assert info.value.aggregate_type == "Broken"

    with pytest.raises(InvalidEventHandlerError, match="instance method"):

        class Static(EventSourcedAggregate):
            @staticmethod
            def apply_OrderPlaced(event: OrderPlaced) -> None:
                pass


async def test_the_repository_returns_the_aggregate_at_its_current_version(world: World) -> None:
    factory = EventSourcedMediatorFactory(world.events, world.uow_factory, world.registry)
    factory.register_event_sourced_type(Order)
    mediator = world.mediator = factory.create()
    await mediator.send(PlaceOrder(order_id="o-1", customer_id="c-9", total=7))
    for sku in ("a", "b", "c"):
        await mediator.send(AddItem(order_id="o-1", sku=sku))

    order = await world.orders.load("o-1")

    assert (order.id, order.customer_id, order.total) == ("o-1", "c-9", 7)
    assert order.items == ["ax1", "bx1", "cx1"]
    assert (order.version, order.original_version) == (4, 4)
    assert order.pending_events == ()
    assert await world.orders.find("nope") is None
    with pytest.raises(RecordNotFoundError):
        await world.orders.load("nope")


async def test_from_events_equals_the_live_aggregate() -> None:
    live = Order.place("o-1", "c", 3)
    live.add_item("x", 2)
    live.ship()

    rebuilt = Order.from_events("o-1", live.collect_events())

    assert rebuilt.model_dump() == live.model_dump()


def stored(event_type: str, payload: dict[str, object], version: int = 1) -> StoredEvent:
    return StoredEvent(
        position=version,
        event_id=f"e-{version}",
        aggregate_type="Order",
        aggregate_id="o-1",
        version=version,
        event_type=event_type,
        schema_version=1,
        payload=payload,
        metadata={},
        occurred_at=OrderPlaced(customer_id="c", total=1).occurred_at,
        correlation_id="corr",
        causation_id="cause",
    )


def test_decode_rebuilds_the_event_with_its_envelope(world: World) -> None:
    event = world.orders.decode(stored("OrderPlaced", {"customer_id": "c", "total": 5}, 3))

    assert isinstance(event, OrderPlaced)
    assert (event.event_id, event.aggregate_version, event.total) == ("e-3", 3, 5)
    assert (event.correlation_id, event.causation_id) == ("corr", "cause")


def test_decode_refuses_unknown_types_and_bad_payloads(world: World) -> None:
    with pytest.raises(InvalidEventHandlerError, match="no event class"):
        world.orders.decode(stored("Vanished", {}))
    with pytest.raises(InvalidEventHandlerError, match="does not fit OrderPlaced"):
        world.orders.decode(stored("OrderPlaced", {"total": "many"}))


def test_an_upcaster_rewrites_old_payloads_before_decoding(world: World) -> None:
    def upcast(event: StoredEvent) -> StoredEvent:
        if event.event_type == "OrderPlaced" and "customer" in event.payload:
            payload = {"customer_id": event.payload["customer"], "total": event.payload["total"]}
            return dataclasses.replace(event, payload=payload, schema_version=2)
        return event

    repository = EventSourcedRepository(
        world.events, Order, event_types=ORDER_EVENTS, upcaster=upcast
    )

    event = repository.decode(stored("OrderPlaced", {"customer": "old", "total": 1}))

    assert isinstance(event, OrderPlaced)
    assert (event.customer_id, event.schema_version) == ("old", 2)


def test_repository_configuration_is_checked(world: World) -> None:
    class OtherPlaced(DomainEvent):
        event_type = "OrderPlaced"

    with pytest.raises(EventSourcingConfigurationError, match="share the event type name"):
        EventSourcedRepository(world.events, Order, event_types=[OrderPlaced, OtherPlaced])
    with pytest.raises(EventSourcingConfigurationError, match="not a DomainEvent"):
        EventSourcedRepository(world.events, Order, event_types=[int])  # type: ignore[list-item]
    with pytest.raises(EventSourcingConfigurationError, match="EventSourcedAggregate"):
        EventSourcedRepository(world.events, int, event_types=[])  # type: ignore[type-var]
    assert "Order" in repr(world.orders)


# -- found by mutation testing (docs/mutation.md) ------------------------------------


def test_a_well_formed_apply_method_is_accepted_when_the_class_is_defined() -> None:
    class Fine(EventSourcedAggregate):
        total: int = 0

        def apply_OrderPlaced(self, event: OrderPlaced) -> None:
            self.total = event.total

    fine = Fine.from_events("f-1", [OrderPlaced(customer_id="c", total=4)])

    assert fine.total == 4


def test_a_rejected_apply_method_is_named_in_the_error() -> None:
    with pytest.raises(InvalidEventHandlerError) as info:

        class Broken(EventSourcedAggregate):
            def apply_ItemAdded(self, event: ItemAdded, extra: int) -> None:
                pass

    assert (info.value.aggregate_type, info.value.event_type) == ("Broken", "ItemAdded")
    assert "apply_ItemAdded(self, event: 'ItemAdded', extra: 'int')" in info.value.reason
    assert "must take exactly one argument besides self" in info.value.reason

    with pytest.raises(InvalidEventHandlerError) as static:

        class Static(EventSourcedAggregate):
            @staticmethod
            def apply_OrderPlaced(event: OrderPlaced) -> None:
                pass

    assert (static.value.aggregate_type, static.value.event_type) == ("Static", "OrderPlaced")


def test_from_events_without_versions_counts_them_from_one() -> None:
    events = [
        OrderPlaced(customer_id="c", total=3),
        ItemAdded(sku="x", quantity=1),
        ItemAdded(sku="y", quantity=1),
    ]

    order = Order.from_events("o-1", events)

    assert (order.version, order.original_version) == (3, 3)
    assert Order.from_events("o-2", [at_version(events[0], 7)]).version == 7


def at_version(event: OrderPlaced, version: int) -> OrderPlaced:
    return event.model_copy(update={"aggregate_version": version})


def test_decode_keeps_every_envelope_field_of_the_stored_event(world: World) -> None:
    original = stored("OrderPlaced", {"customer_id": "c", "total": 5}, 3)
    original = dataclasses.replace(original, metadata={"actor": "ann"})

    event = world.orders.decode(original)

    assert (event.aggregate_type, event.aggregate_id) == ("Order", "o-1")
    assert event.occurred_at == original.occurred_at
    assert event.metadata == {"actor": "ann"}


def test_decode_errors_and_a_missing_aggregate_name_what_was_looked_for(world: World) -> None:
    with pytest.raises(InvalidEventHandlerError, match="list it in event_types") as unknown:
        world.orders.decode(stored("Vanished", {}))
    with pytest.raises(InvalidEventHandlerError) as bad:
        world.orders.decode(stored("OrderPlaced", {"total": "many"}))

    assert (unknown.value.aggregate_type, unknown.value.event_type) == ("Order", "Vanished")
    assert (bad.value.aggregate_type, bad.value.event_type) == ("Order", "OrderPlaced")


async def test_loading_a_missing_aggregate_names_its_type_and_id(world: World) -> None:
    with pytest.raises(RecordNotFoundError) as missing:
        await world.orders.load("nope")

    assert (missing.value.kind, missing.value.key) == ("Order", "nope")


def test_repository_configuration_errors_name_the_aggregate_type(world: World) -> None:
    class OtherPlaced(DomainEvent):
        event_type = "OrderPlaced"

    with pytest.raises(EventSourcingConfigurationError) as shared:
        EventSourcedRepository(world.events, Order, event_types=[OrderPlaced, OtherPlaced])
    with pytest.raises(EventSourcingConfigurationError) as not_event:
        EventSourcedRepository(world.events, Order, event_types=[int])  # type: ignore[list-item]

    assert shared.value.aggregate_type == not_event.value.aggregate_type == "Order"
