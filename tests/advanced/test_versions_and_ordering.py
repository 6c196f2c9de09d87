"""Stream versions follow the aggregate's version; order follows causation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cqrs_ddd_advanced_core import (
    EventPersistenceMiddleware,
    EventSourcedMediator,
    EventSourcedPersistenceOrchestrator,
    OutboxMiddleware,
)
from cqrs_ddd_core.context import current_uow
from cqrs_ddd_core.cqrs import CommandResponse
from cqrs_ddd_core.domain import Command
from cqrs_ddd_core.exceptions import ConcurrencyError
from cqrs_ddd_core.middleware import UnitOfWorkMiddleware
from tests.advanced.domain import (
    AddItem,
    Customer,
    Order,
    OrderPlaced,
    PlaceOrder,
    PlaceOrderAndAddItem,
    World,
)


class AddItems(Command[None]):
    order_id: str
    count: int


class AddLateItem(Command[None]):
    pass


def mediator_for(world: World, *, outbox: bool = False) -> EventSourcedMediator:
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=world.events)
    orchestrator.register_event_sourced_type(Order)

    async def add_items(command: AddItems) -> CommandResponse[None]:
        order = await world.orders.load(command.order_id)
        for index in range(command.count):
            order.add_item(f"sku-{index}", 1)
        return CommandResponse.from_aggregates(None, order)

    world.registry.register_command_handler(AddItems, add_items)
    mediator = EventSourcedMediator(
        registry=world.registry,
        uow_factory=world.uow_factory,
        event_persistence_orchestrator=orchestrator,
        outbox_store=world.outbox if outbox else None,
        # Lean pipeline: these tests are about persistence only.
        middlewares=[
            UnitOfWorkMiddleware(world.uow_factory),
            EventPersistenceMiddleware(orchestrator=orchestrator),
            *([OutboxMiddleware(outbox_store=world.outbox)] if outbox else []),
        ],
    )
    world.mediator = mediator
    return mediator


async def test_a_command_on_an_aggregate_at_version_4_that_records_2_events_appends_5_and_6(
    world: World,
) -> None:
    mediator = mediator_for(world)
    await mediator.send(PlaceOrder(order_id="o-1"))
    await mediator.send(AddItems(order_id="o-1", count=3))

    response = await mediator.send(AddItems(order_id="o-1", count=2))

    assert [e.aggregate_version for e in response.events] == [5, 6]
    stream = await world.events.load_stream("Order", "o-1")
    assert [e.version for e in stream] == [1, 2, 3, 4, 5, 6]
    assert (await world.orders.load("o-1")).version == 6


@settings(max_examples=25)
@given(counts=st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=15))
async def test_versions_stay_continuous_over_many_commands(counts: list[int]) -> None:
    world = World()
    mediator = mediator_for(world)
    await mediator.send(PlaceOrder(order_id="o-1"))

    for count in counts:
        await mediator.send(AddItems(order_id="o-1", count=count))

    stream = await world.events.load_stream("Order", "o-1")
    assert [e.version for e in stream] == list(range(1, 2 + sum(counts)))
    assert [e.position for e in await world.events.read_all()] == list(range(1, 2 + sum(counts)))
    order = await world.orders.load("o-1")
    assert order.version == 1 + sum(counts)
    assert len(order.items) == sum(counts)


async def test_a_stale_expected_version_raises_a_concurrency_error_naming_the_stream(
    world: World,
) -> None:
    mediator = mediator_for(world)
    await mediator.send(PlaceOrder(order_id="o-1"))
    stale = await world.orders.load("o-1")  # at version 1
    await mediator.send(AddItem(order_id="o-1"))  # the stream moves to version 2

    async def add_with_stale_copy(command: AddLateItem) -> CommandResponse[None]:
        stale.add_item("late", 1)
        return CommandResponse.from_aggregates(None, stale)

    world.registry.register_command_handler(AddLateItem, add_with_stale_copy)

    with pytest.raises(ConcurrencyError) as info:
        await mediator.send(AddLateItem())

    assert info.value.stream == "Order:o-1"
    assert info.value.expected_version == 1
    assert info.value.actual_version == 2
    assert [e.version for e in await world.events.load_stream("Order", "o-1")] == [1, 2]


async def test_a_parents_events_precede_its_nested_commands_events_in_one_transaction(
    world: World,
) -> None:
    mediator = mediator_for(world, outbox=True)

    response = await mediator.send(PlaceOrderAndAddItem(order_id="p"))

    assert len(world.uows) == 1  # the nested command joined the parent's unit of work
    stored = await world.events.read_all()
    assert [(e.position, e.aggregate_id) for e in stored] == [(1, "p"), (2, "p-child")]
    parent_event, child_event = stored
    assert parent_event.causation_id == response.causation_id
    assert child_event.correlation_id == parent_event.correlation_id
    assert child_event.causation_id != parent_event.causation_id
    # The outbox keeps the same order.
    claimed = await world.outbox.claim_batch()
    assert [m.aggregate_id for m in claimed] == ["p", "p-child"]


async def test_a_failing_nested_command_rolls_back_the_parents_events_too(world: World) -> None:
    mediator = mediator_for(world, outbox=True)

    world.failing.add(PlaceOrder)

    with pytest.raises(RuntimeError, match="PlaceOrder failed"):
        await mediator.send(PlaceOrderAndAddItem(order_id="p"))

    assert await world.events.latest_position() == 0
    assert len(world.outbox) == 0


class PlaceOrderTolerantly(Command[str]):
    """Places an order and sends a nested command whose failure it catches."""

    order_id: str


async def test_a_nested_command_that_fails_and_is_caught_leaves_none_of_its_writes(
    world: World,
) -> None:
    mediator = mediator_for(world, outbox=True)
    staged_when_the_child_failed: list[int] = []
    handled: list[str | None] = []

    class FailingChild(Command[None]):
        order_id: str

    async def failing_child(command: FailingChild) -> None:
        # The child's own subtree stages writes first: a grandchild's events and
        # outbox rows (staged when it returned) and a state row...
        await mediator.send(PlaceOrder(order_id=f"{command.order_id}-grandchild"))
        world.customers.save(Customer(id="cust-1", name="kept?"))
        uow = current_uow()
        assert uow is not None
        staged_when_the_child_failed.append(sum(len(r) for _, r in uow.staged_groups()))
        # ...and only then fails.
        raise RuntimeError("child failed after staging its writes")

    async def tolerant_parent(command: PlaceOrderTolerantly) -> CommandResponse[str]:
        order = Order.place(command.order_id, "c-1", 5)
        parent_response = CommandResponse.from_aggregates(order.id, order)
        with pytest.raises(RuntimeError, match="child failed"):
            await mediator.send(FailingChild(order_id=f"{command.order_id}-child"))
        return parent_response

    async def on_placed(event: OrderPlaced) -> None:
        handled.append(event.aggregate_id)

    world.registry.register_command_handler(FailingChild, failing_child)
    world.registry.register_command_handler(PlaceOrderTolerantly, tolerant_parent)
    world.registry.register_event_handler(OrderPlaced, on_placed)

    await mediator.send(PlaceOrderTolerantly(order_id="t"))

    # The premise: the child had staged its subtree's event, outbox row and state row.
    assert staged_when_the_child_failed == [3]
    stored = await world.events.read_all()
    assert [e.aggregate_id for e in stored] == ["t"]
    assert [m.aggregate_id for m in await world.outbox.claim_batch()] == ["t"]
    assert await world.customers.find("cust-1") is None
    # Only the parent's event reaches in-process handlers.
    assert handled == ["t"]


async def test_two_nested_commands_appending_the_same_version_fail_the_whole_transaction(
    world: World,
) -> None:
    mediator = mediator_for(world, outbox=True)
    await mediator.send(PlaceOrder(order_id="existing"))

    class AddTwiceStale(Command[None]):
        pass

    async def stale_child(command: AddTwiceStale) -> CommandResponse[None]:
        order = await world.orders.load("existing")
        order.add_item("a", 1)
        return CommandResponse.from_aggregates(None, order)

    async def parent(command: PlaceOrderTolerantly) -> CommandResponse[str]:
        order = Order.place(command.order_id, "c-1", 5)
        response = CommandResponse.from_aggregates(order.id, order)
        await mediator.send(AddTwiceStale())
        await mediator.send(AddTwiceStale())  # loads the same committed version again
        return response

    world.registry.register_command_handler(AddTwiceStale, stale_child)
    world.registry.register_command_handler(PlaceOrderTolerantly, parent)

    # Both children append version 2 of "existing": the conflict surfaces at
    # commit, and the whole transaction (parent included) rolls back.
    with pytest.raises(ConcurrencyError):
        await mediator.send(PlaceOrderTolerantly(order_id="u"))
    assert [e.aggregate_id for e in await world.events.read_all()] == ["existing"]
