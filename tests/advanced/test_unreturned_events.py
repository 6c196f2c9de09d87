"""Events recorded during a command are persisted whatever its handler returns."""

from __future__ import annotations

import pytest

from cqrs_ddd_advanced_core import (
    EventPersistenceMiddleware,
    EventSourcedAggregateRequiredError,
    EventSourcedMediator,
    EventSourcedPersistenceOrchestrator,
)
from cqrs_ddd_core.cqrs import CommandResponse, HandlerRegistry
from cqrs_ddd_core.domain import Command
from cqrs_ddd_core.exceptions import ConcurrencyError
from cqrs_ddd_core.middleware import RetryMiddleware, UnitOfWorkMiddleware
from tests.advanced.domain import ItemAdded, Order, OrderPlaced, Unregistered, World


class Place(Command[str]):
    order_id: str


def mediator_for(world: World, registry: HandlerRegistry) -> EventSourcedMediator:
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=world.events)
    orchestrator.register_event_sourced_type(Order)
    return EventSourcedMediator(
        registry=registry,
        uow_factory=world.uow_factory,
        event_persistence_orchestrator=orchestrator,
    )


async def test_a_handler_returning_a_plain_value_still_persists_the_events_it_recorded(
    world: World,
) -> None:
    placed: list[Order] = []

    async def place(command: Place) -> str:
        order = Order.place(command.order_id, "c-1", 3)
        order.add_item("book", 1)
        placed.append(order)
        return order.id  # no CommandResponse: the events are not returned

    registry = HandlerRegistry()
    registry.register_command_handler(Place, place)

    response = await mediator_for(world, registry).send(Place(order_id="o-1"))

    assert response.result == "o-1"
    assert [type(e) for e in response.events] == [OrderPlaced, ItemAdded]
    stream = await world.events.load_stream("Order", "o-1")
    assert [(s.version, s.event_type) for s in stream] == [(1, "OrderPlaced"), (2, "ItemAdded")]
    # Persisted now, so a later collect_events() cannot hand them out again.
    assert placed[0].pending_events == ()


async def test_an_aggregate_left_out_of_the_response_still_has_its_events_persisted(
    world: World,
) -> None:
    async def place(command: Place) -> CommandResponse[str]:
        first = Order.place(command.order_id, "c-1", 3)
        Order.place(f"{command.order_id}-b", "c-1", 4)  # left out of the response
        return CommandResponse.from_aggregates(first.id, first)

    registry = HandlerRegistry()
    registry.register_command_handler(Place, place)

    response = await mediator_for(world, registry).send(Place(order_id="o-1"))

    assert [e.aggregate_id for e in response.events] == ["o-1", "o-1-b"]
    assert len(await world.events.load_stream("Order", "o-1-b")) == 1
    assert await world.events.latest_position() == 2


async def test_events_collected_and_thrown_away_by_the_handler_are_still_persisted(
    world: World,
) -> None:
    async def place(command: Place) -> None:
        order = Order.place(command.order_id, "c-1", 3)
        order.collect_events()  # dropped on the floor

    registry = HandlerRegistry()
    registry.register_command_handler(Place, place)

    await mediator_for(world, registry).send(Place(order_id="o-1"))

    assert [s.event_type for s in await world.events.load_stream("Order", "o-1")] == ["OrderPlaced"]


async def test_unreturned_events_of_an_unregistered_type_fail_the_command_with_a_typed_error(
    world: World,
) -> None:
    async def touch(command: Place) -> None:
        Unregistered(id=command.order_id).touch()

    registry = HandlerRegistry()
    registry.register_command_handler(Place, touch)

    with pytest.raises(EventSourcedAggregateRequiredError) as caught:
        await mediator_for(world, registry).send(Place(order_id="u-1"))

    assert caught.value.aggregate_type == "Unregistered"
    assert await world.events.latest_position() == 0


async def test_returned_events_are_not_persisted_twice(world: World) -> None:
    async def place(command: Place) -> CommandResponse[str]:
        order = Order.place(command.order_id, "c-1", 3)
        # Returned without being collected: still pending on the aggregate.
        return CommandResponse(order.id, order.pending_events)

    registry = HandlerRegistry()
    registry.register_command_handler(Place, place)

    response = await mediator_for(world, registry).send(Place(order_id="o-1"))

    assert len(response.events) == 1
    assert await world.events.latest_position() == 1


async def test_a_retried_command_persists_only_the_events_of_its_last_attempt(
    world: World,
) -> None:
    attempts: list[int] = []

    async def place(command: Place) -> str:
        attempts.append(1)
        order = Order.place(command.order_id, "c-1", len(attempts))
        if len(attempts) == 1:
            raise ConcurrencyError("Order:o-1", 0, 1)  # after recording: retried
        return order.id

    registry = HandlerRegistry()
    registry.register_command_handler(Place, place)
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=world.events)
    orchestrator.register_event_sourced_type(Order)
    mediator = EventSourcedMediator(
        registry=registry,
        uow_factory=world.uow_factory,
        event_persistence_orchestrator=orchestrator,
        middlewares=[
            RetryMiddleware(attempts=2, initial_delay=0),
            UnitOfWorkMiddleware(world.uow_factory),
            EventPersistenceMiddleware(orchestrator=orchestrator),
        ],
    )

    response = await mediator.send(Place(order_id="o-1"))

    assert len(attempts) == 2
    assert len(response.events) == 1
    [stored] = await world.events.load_stream("Order", "o-1")
    assert stored.payload["total"] == 2
