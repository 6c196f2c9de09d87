"""The seed's seven tests, and what the EventSourcedMediator's pipeline looks like."""

from __future__ import annotations

from typing import Any

import pytest

from cqrs_ddd_advanced_core import (
    EventPersistenceMiddleware,
    EventSourcedMediator,
    EventSourcedMediatorFactory,
    EventSourcedPersistenceOrchestrator,
    EventSourcingConfigurationError,
    OutboxMiddleware,
)
from cqrs_ddd_core.cqrs import Mediator
from cqrs_ddd_core.exceptions import PipelineConfigurationError
from cqrs_ddd_core.middleware import UnitOfWorkMiddleware, ValidationMiddleware
from cqrs_ddd_core.pipeline import CallNext, Middleware, placement
from tests.advanced.domain import (
    AddItem,
    ChangePreferences,
    Order,
    PlaceOrder,
    UserPreferences,
    World,
)


def make_mediator(world: World, **kwargs: object) -> EventSourcedMediator:
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=world.events)
    orchestrator.register_event_sourced_type("Order")
    orchestrator.register_non_event_sourced_type("UserPreferences")
    return EventSourcedMediator(
        registry=world.registry,
        uow_factory=world.uow_factory,
        event_persistence_orchestrator=orchestrator,
        **kwargs,  # type: ignore[arg-type]
    )


async def test_event_sourced_mediator_extends_core_mediator(world: World) -> None:
    mediator = make_mediator(world)

    assert isinstance(mediator, Mediator)
    assert mediator.pipeline.order == (
        *mediator.pipeline.order[: mediator.pipeline.order.index("unit_of_work") + 1],
        "event_persistence",
        "handler",
    )
    assert "validation" in mediator.pipeline.order
    # The core defaults are kept: queries still work through the core pipeline.
    assert mediator.query_pipeline.order[-1] == "handler"


async def test_send_command_with_persistence(world: World) -> None:
    mediator = make_mediator(world)

    response = await mediator.send(PlaceOrder(order_id="o-1", total=30))
    await mediator.send(AddItem(order_id="o-1", sku="book", quantity=2))

    stream = await world.events.load_stream("Order", "o-1")
    assert [(e.version, e.event_type) for e in stream] == [(1, "OrderPlaced"), (2, "ItemAdded")]
    assert stream[0].payload == {"customer_id": "c-1", "total": 30}
    assert stream[0].event_id == response.events[0].event_id
    assert stream[0].correlation_id == response.correlation_id
    assert stream[0].causation_id == response.causation_id
    order = await world.orders.load("o-1")
    assert (order.version, order.total, order.items) == (2, 30, ["bookx2"])
    assert all(uow.is_open is False for uow in world.uows)


async def test_non_event_sourced_aggregate_events_skipped(world: World) -> None:
    mediator = make_mediator(world)

    response = await mediator.send(ChangePreferences(user_id="u-1", theme="dark"))

    assert [e.event_type for e in response.events] == ["PreferencesChanged"]
    assert await world.events.latest_position() == 0
    # The state still commits: only the event store is skipped.
    prefs = await world.preferences.get("u-1")
    assert prefs.theme == "dark"


async def test_configure_event_sourced_type(world: World) -> None:
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=world.events)
    mediator = EventSourcedMediator(
        registry=world.registry,
        uow_factory=world.uow_factory,
        event_persistence_orchestrator=orchestrator,
    )
    assert not orchestrator.is_event_sourced("Order")

    mediator.configure_event_sourced_type("Order")

    assert orchestrator.is_event_sourced("Order")
    assert orchestrator.is_event_sourced(Order)
    await mediator.send(PlaceOrder(order_id="o-1"))
    assert [e.version for e in await world.events.load_stream("Order", "o-1")] == [1]


async def test_configure_non_event_sourced_type(world: World) -> None:
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=world.events)
    mediator = EventSourcedMediator(
        registry=world.registry,
        uow_factory=world.uow_factory,
        event_persistence_orchestrator=orchestrator,
    )

    mediator.configure_non_event_sourced_type("Order")

    assert not orchestrator.is_event_sourced("Order")
    assert "Order" in orchestrator.non_event_sourced_types
    response = await mediator.send(PlaceOrder(order_id="o-1"))
    assert len(response.events) == 1
    assert await world.events.latest_position() == 0
    with pytest.raises(EventSourcingConfigurationError) as info:
        mediator.configure_event_sourced_type("Order")
    assert info.value.aggregate_type == "Order"


async def test_factory_creates_configured_mediator(world: World) -> None:
    factory = EventSourcedMediatorFactory(
        event_store=world.events,
        uow_factory=world.uow_factory,
        handler_registry=world.registry,
        outbox_store=world.outbox,
    )
    factory.register_event_sourced_type("Order")
    factory.register_non_event_sourced_type(UserPreferences)

    mediator = factory.create()

    assert isinstance(mediator, EventSourcedMediator)
    assert mediator.event_persistence_orchestrator is factory.orchestrator
    assert mediator.registry is world.registry
    kinds = [type(m) for m in mediator.pipeline.middlewares]
    assert kinds.index(UnitOfWorkMiddleware) + 1 == kinds.index(EventPersistenceMiddleware)
    assert kinds.index(EventPersistenceMiddleware) + 1 == kinds.index(OutboxMiddleware)
    assert ValidationMiddleware in kinds
    response = await mediator.send(PlaceOrder(order_id="o-1"))
    await mediator.send(ChangePreferences(user_id="u-1", theme="dark"))
    assert [e.event_type for e in await world.events.load_stream("Order", "o-1")] == ["OrderPlaced"]
    assert await world.events.latest_position() == 1
    # The outbox receives both: non-event-sourced events are still published.
    assert len(world.outbox) == 2
    assert await world.outbox.get(response.events[0].event_id) is not None


async def test_configure_without_orchestrator_raises(world: World) -> None:
    mediator = EventSourcedMediator(registry=world.registry, uow_factory=world.uow_factory)

    with pytest.raises(EventSourcingConfigurationError, match=r"^Cannot configure event-sourced"):
        mediator.configure_event_sourced_type("Order")
    with pytest.raises(EventSourcingConfigurationError, match=r"^Cannot configure event-sourced"):
        mediator.configure_non_event_sourced_type("UserPreferences")
    assert "event_persistence" not in mediator.pipeline.order


def test_outbox_store_adds_the_outbox_step_right_after_event_persistence(world: World) -> None:
    mediator = make_mediator(world, outbox_store=world.outbox)

    order = mediator.pipeline.order
    at = order.index("unit_of_work")
    assert order[at + 1 : at + 3] == ("event_persistence", "outbox")


def test_persistence_is_inserted_after_unit_of_work_whatever_else_the_defaults_hold(
    world: World,
) -> None:
    @placement(name="outer")
    async def outer(message: Any, context: Any, call_next: CallNext) -> Any:
        return await call_next(message, context)

    @placement(name="inner")
    async def inner(message: Any, context: Any, call_next: CallNext) -> Any:
        return await call_next(message, context)

    class RicherCoreDefaults(Mediator):
        def _default_command_middlewares(self) -> list[Middleware]:
            return [outer, *super()._default_command_middlewares(), inner]

    class Probe(EventSourcedMediator, RicherCoreDefaults):
        pass

    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=world.events)
    mediator = Probe(
        registry=world.registry,
        uow_factory=world.uow_factory,
        event_persistence_orchestrator=orchestrator,
        outbox_store=world.outbox,
    )

    order = mediator.pipeline.order
    at = order.index("unit_of_work")
    assert order[0] == "outer"
    assert order[at:] == ("unit_of_work", "event_persistence", "outbox", "inner", "handler")


def test_a_listed_pipeline_without_event_persistence_is_refused(world: World) -> None:
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=world.events)

    with pytest.raises(EventSourcingConfigurationError, match="no event would be persisted"):
        EventSourcedMediator(
            registry=world.registry,
            uow_factory=world.uow_factory,
            event_persistence_orchestrator=orchestrator,
            middlewares=[UnitOfWorkMiddleware(world.uow_factory)],
        )


def test_an_outbox_store_with_a_listed_pipeline_without_an_outbox_step_is_refused(
    world: World,
) -> None:
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=world.events)

    with pytest.raises(PipelineConfigurationError, match="no outbox message") as caught:
        EventSourcedMediator(
            registry=world.registry,
            uow_factory=world.uow_factory,
            event_persistence_orchestrator=orchestrator,
            outbox_store=world.outbox,
            middlewares=[
                UnitOfWorkMiddleware(world.uow_factory),
                EventPersistenceMiddleware(orchestrator=orchestrator),
            ],
        )
    assert caught.value.offender == "outbox"
    assert caught.value.order == ("unit_of_work", "event_persistence")


async def test_an_outbox_store_with_a_listed_outbox_step_writes_outbox_rows(world: World) -> None:
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=world.events)
    orchestrator.register_event_sourced_type(Order)
    mediator = EventSourcedMediator(
        registry=world.registry,
        uow_factory=world.uow_factory,
        event_persistence_orchestrator=orchestrator,
        outbox_store=world.outbox,
        middlewares=[
            UnitOfWorkMiddleware(world.uow_factory),
            EventPersistenceMiddleware(orchestrator=orchestrator),
            OutboxMiddleware(outbox_store=world.outbox),
        ],
    )

    await mediator.send(PlaceOrder(order_id="o-1"))

    assert len(world.outbox) == 1


def test_an_orchestrator_without_a_unit_of_work_factory_is_refused(world: World) -> None:
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=world.events)

    with pytest.raises(EventSourcingConfigurationError, match="no unit_of_work step"):
        EventSourcedMediator(registry=world.registry, event_persistence_orchestrator=orchestrator)


async def test_a_listed_pipeline_is_used_as_listed(world: World) -> None:
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=world.events)
    orchestrator.register_event_sourced_type(Order)
    mediator = EventSourcedMediator(
        registry=world.registry,
        uow_factory=world.uow_factory,
        event_persistence_orchestrator=orchestrator,
        middlewares=[
            UnitOfWorkMiddleware(world.uow_factory),
            EventPersistenceMiddleware(orchestrator=orchestrator),
        ],
    )

    assert mediator.describe().splitlines()[0] == (
        "commands: unit_of_work -> event_persistence -> handler"
    )
    await mediator.send(PlaceOrder(order_id="o-1"))
    assert await world.events.latest_position() == 1
