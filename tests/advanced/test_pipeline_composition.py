"""The persistence middlewares on a plain Mediator: listed, reordered, checked."""

from __future__ import annotations

from typing import Any

import pytest

from cqrs_ddd_advanced_core import (
    AuditMiddleware,
    EventPersistenceMiddleware,
    EventSourcedPersistenceOrchestrator,
    OutboxMiddleware,
)
from cqrs_ddd_core.context import DispatchContext
from cqrs_ddd_core.cqrs import Mediator
from cqrs_ddd_core.exceptions import PipelineConfigurationError, UnitOfWorkError
from cqrs_ddd_core.middleware import UnitOfWorkMiddleware, ValidationMiddleware
from cqrs_ddd_core.pipeline import Middleware
from tests.advanced.domain import Order, PlaceOrder, World


def orchestrator(world: World) -> EventSourcedPersistenceOrchestrator:
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=world.events)
    orchestrator.register_event_sourced_type(Order)
    return orchestrator


@pytest.mark.parametrize(
    "names",
    [
        ("unit_of_work", "event_persistence", "outbox", "audit"),
        ("unit_of_work", "audit", "outbox", "event_persistence"),
        ("audit", "unit_of_work", "outbox", "event_persistence"),
    ],
)
async def test_the_middlewares_work_on_a_plain_mediator_in_any_valid_order(
    world: World, names: tuple[str, ...]
) -> None:
    steps: dict[str, Middleware] = {
        "unit_of_work": UnitOfWorkMiddleware(world.uow_factory),
        "event_persistence": EventPersistenceMiddleware(orchestrator=orchestrator(world)),
        "outbox": OutboxMiddleware(outbox_store=world.outbox),
        "audit": AuditMiddleware(audit_store=world.audit),
    }
    mediator = Mediator(world.registry, world.uow_factory, middlewares=[steps[n] for n in names])

    response = await mediator.send(PlaceOrder(order_id="o-1"))

    assert mediator.pipeline.order == (*names, "handler")
    assert await world.events.latest_position() == 1
    assert await world.outbox.get(response.events[0].event_id) is not None
    assert [r.outcome for r in await world.audit.list_records()] == ["success"]


def test_event_persistence_outside_the_unit_of_work_is_refused_when_the_pipeline_is_built(
    world: World,
) -> None:
    with pytest.raises(PipelineConfigurationError) as info:
        Mediator(
            world.registry,
            world.uow_factory,
            middlewares=[
                ValidationMiddleware(),
                EventPersistenceMiddleware(orchestrator=orchestrator(world)),
                UnitOfWorkMiddleware(world.uow_factory),
            ],
        )

    assert info.value.offender == "event_persistence"
    assert info.value.order == ("validation", "event_persistence", "unit_of_work")
    assert "validation -> event_persistence -> unit_of_work -> handler" in str(info.value)


async def test_event_persistence_without_an_open_unit_of_work_raises(world: World) -> None:
    middleware = EventPersistenceMiddleware(orchestrator=orchestrator(world))
    command = PlaceOrder(order_id="o-1")

    async def terminal(message: Any, context: DispatchContext) -> None:
        return None

    with pytest.raises(UnitOfWorkError, match="event_persistence found no unit of work"):
        await middleware(command, DispatchContext(command, "command"), terminal)


async def test_a_step_inside_event_persistence_may_answer_with_a_plain_value(
    world: World,
) -> None:
    # Not every answer is a CommandResponse (a short-circuiting inner step):
    # event persistence passes it on, with nothing to persist.
    middleware = EventPersistenceMiddleware(orchestrator=orchestrator(world))
    command = PlaceOrder(order_id="o-1")
    context = DispatchContext(command, "command")
    context.uow = world.uow_factory()

    async def terminal(message: Any, context: DispatchContext) -> str:
        return "cached"

    assert await middleware(command, context, terminal) == "cached"
    assert not context.uow.has_staged  # type: ignore[attr-defined]


def test_middlewares_show_their_configuration(world: World) -> None:
    with pytest.raises(TypeError, match="orchestrator"):
        EventPersistenceMiddleware(orchestrator=object())  # type: ignore[arg-type]
    middleware = EventPersistenceMiddleware(orchestrator=orchestrator(world))
    assert repr(middleware).startswith("EventPersistenceMiddleware(orchestrator=")
    assert middleware.orchestrator.is_event_sourced("Order")
