"""The factory: shared orchestrator, strictness, outbox, extra middlewares, event dispatcher."""

from __future__ import annotations

import pytest

from cqrs_ddd_advanced_core import (
    AuditMiddleware,
    EventDispatchMiddleware,
    EventSourcedAggregateRequiredError,
    EventSourcedMediatorFactory,
)
from cqrs_ddd_core.context import DispatchContext, ambient_correlation_id, current_context
from cqrs_ddd_core.domain import DomainEvent
from cqrs_ddd_core.exceptions import UnitOfWorkError
from tests.advanced.domain import (
    ChangePreferences,
    Order,
    PlaceOrder,
    PlaceOrderAndAddItem,
    TouchUnregistered,
    World,
)


class RecordingDispatcher:
    def __init__(self, world: World) -> None:
        self.world = world
        self.seen: list[tuple[str, str | None, bool]] = []

    async def dispatch(self, event: DomainEvent) -> None:
        committed = await self.world.events.latest_position() > 0
        self.seen.append((event.type_name(), event.aggregate_id, committed))


def factory_for(world: World, **options: object) -> EventSourcedMediatorFactory:
    factory = EventSourcedMediatorFactory(
        world.events,
        world.uow_factory,
        world.registry,
        **options,  # type: ignore[arg-type]
    )
    factory.register_event_sourced_type(Order)
    return factory


async def test_the_event_dispatcher_gets_committed_events_in_persistence_order(
    world: World,
) -> None:
    dispatcher = RecordingDispatcher(world)
    world.mediator = factory_for(world, event_dispatcher=dispatcher).create()

    await world.mediator.send(PlaceOrderAndAddItem(order_id="p"))

    assert dispatcher.seen == [("OrderPlaced", "p", True), ("OrderPlaced", "p-child", True)]


async def test_the_event_dispatcher_sees_nothing_when_the_command_rolls_back(world: World) -> None:
    dispatcher = RecordingDispatcher(world)
    world.mediator = factory_for(world, event_dispatcher=dispatcher).create()
    world.failing.add(PlaceOrder)

    with pytest.raises(RuntimeError):
        await world.mediator.send(PlaceOrderAndAddItem(order_id="p"))

    assert dispatcher.seen == []


async def test_a_failing_dispatch_is_logged_and_the_next_event_still_goes_out(
    world: World,
) -> None:
    class Flaky(RecordingDispatcher):
        async def dispatch(self, event: DomainEvent) -> None:
            await super().dispatch(event)
            if event.aggregate_id == "p":
                raise RuntimeError("handler bug")

    dispatcher = Flaky(world)
    world.mediator = factory_for(world, event_dispatcher=dispatcher).create()

    response = await world.mediator.send(PlaceOrderAndAddItem(order_id="p"))

    assert response.result == "p"  # the command committed; dispatch errors do not fail it
    assert [aggregate for _, aggregate, _ in dispatcher.seen] == ["p", "p-child"]


async def test_a_dispatcher_may_send_commands_that_commit_in_their_own_unit_of_work(
    world: World,
) -> None:
    seen: list[tuple[str | None, object]] = []

    class Reacting:
        async def dispatch(self, event: DomainEvent) -> None:
            seen.append((ambient_correlation_id(), current_context()))
            if event.aggregate_id == "o-1":
                assert world.mediator is not None
                await world.mediator.send(PlaceOrder(order_id="o-1-follow-up"))

    audit = AuditMiddleware(audit_store=world.audit)
    world.mediator = factory_for(
        world, event_dispatcher=Reacting(), inner_middlewares=[audit]
    ).create()

    response = await world.mediator.send(PlaceOrder(order_id="o-1"))

    # The dispatch that raised the event is over: no context is current.
    assert seen == [(response.correlation_id, None), (response.correlation_id, None)]
    assert len(world.uows) == 2
    first, follow_up = await world.events.read_all()
    assert follow_up.aggregate_id == "o-1-follow-up"
    assert follow_up.correlation_id == first.correlation_id
    follow_up_audit = (await world.audit.list_records())[1]
    assert follow_up_audit.message_id == follow_up.causation_id
    assert follow_up_audit.causation_id == first.event_id  # caused by the event


def test_the_factory_lists_dispatch_first_then_extra_middlewares(world: World) -> None:
    audit = AuditMiddleware(audit_store=world.audit)
    factory = factory_for(
        world, event_dispatcher=RecordingDispatcher(world), inner_middlewares=[audit]
    )

    order = factory.create().pipeline.order

    at = order.index("unit_of_work")
    assert order[at:] == ("unit_of_work", "event_persistence", "event_dispatch", "audit", "handler")


async def test_factory_strictness_and_shared_registrations(world: World) -> None:
    strict = factory_for(world)
    first = strict.create()
    strict.register_non_event_sourced_type("Unregistered")
    second = strict.create()

    # Registered after `first` was created, it applies to both mediators.
    await first.send(TouchUnregistered(aggregate_id="a"))
    await second.send(TouchUnregistered(aggregate_id="b"))
    assert await world.events.latest_position() == 0

    lenient_world = World()
    lenient = factory_for(lenient_world, strict=False).create()
    await lenient.send(TouchUnregistered(aggregate_id="a"))
    assert await lenient_world.events.latest_position() == 1

    strict_world = World()
    with pytest.raises(EventSourcedAggregateRequiredError):
        await factory_for(strict_world).create().send(TouchUnregistered(aggregate_id="a"))


async def test_non_event_sourced_events_reach_the_outbox_but_not_the_event_store(
    world: World,
) -> None:
    mediator = factory_for(world, outbox_store=world.outbox).create()

    response = await mediator.send(ChangePreferences(user_id="u", theme="dark"))

    assert await world.events.latest_position() == 0
    assert await world.outbox.get(response.events[0].event_id) is not None


def test_event_dispatch_config_is_validated(world: World) -> None:
    with pytest.raises(TypeError, match="dispatch"):
        EventDispatchMiddleware(dispatcher=object())  # type: ignore[arg-type]
    middleware = EventDispatchMiddleware(dispatcher=RecordingDispatcher(world))
    assert repr(middleware).startswith("EventDispatchMiddleware(dispatcher=")


async def test_event_dispatch_without_a_unit_of_work_is_reported(world: World) -> None:
    middleware = EventDispatchMiddleware(dispatcher=RecordingDispatcher(world))
    command = PlaceOrder(order_id="o")

    async def terminal(message: object, context: DispatchContext) -> None:
        return None

    with pytest.raises(UnitOfWorkError):
        await middleware(command, DispatchContext(command, "command"), terminal)
