"""The seed's constructors: argument order and names, and steps placed among the defaults."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from cqrs_ddd_advanced_core import (
    AuditMiddleware,
    EventSourcedMediator,
    EventSourcedMediatorFactory,
    EventSourcedPersistenceOrchestrator,
    EventSourcingConfigurationError,
)
from cqrs_ddd_core.adapters.memory import InMemoryAuditStore
from cqrs_ddd_core.cqrs import Mediator
from tests.advanced.domain import Order, PlaceOrder, World


def positional(callable_: Any) -> list[str]:
    return [
        p.name
        for p in inspect.signature(callable_).parameters.values()
        if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and p.name != "self"
    ]


def test_the_factory_takes_the_seeds_positional_arguments_in_the_seeds_order() -> None:
    # Seed: EventSourcedMediatorFactory(event_store, uow_factory, handler_registry,
    #                                   event_dispatcher=None, ...)
    assert positional(EventSourcedMediatorFactory) == [
        "event_store",
        "uow_factory",
        "handler_registry",
        "event_dispatcher",
    ]


def test_the_mediator_takes_the_seeds_keywords_and_the_core_mediators_positional_order() -> None:
    # Seed: EventSourcedMediator(registry=..., uow_factory=...,
    #                            event_persistence_orchestrator=...)
    names = positional(EventSourcedMediator)

    assert names == ["registry", "uow_factory", "event_persistence_orchestrator"]
    assert names[:2] == positional(Mediator)


def test_the_optional_arguments_are_keyword_only_and_named_alike_on_both() -> None:
    shared = {"outbox_store", "inner_middlewares", "insert_before", "insert_after"}
    for cls in (EventSourcedMediator, EventSourcedMediatorFactory):
        keyword_only = {
            p.name
            for p in inspect.signature(cls).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        }
        assert shared <= keyword_only, cls.__name__


def test_the_seeds_keyword_call_builds_the_persisting_pipeline(world: World) -> None:
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=world.events)
    mediator = EventSourcedMediator(
        registry=world.registry,
        uow_factory=world.uow_factory,
        event_persistence_orchestrator=orchestrator,
    )

    assert mediator.pipeline.describe() == (
        "tracing -> logging -> metrics -> validation -> unit_of_work -> event_persistence "
        "-> handler"
    )


async def test_the_factory_places_a_step_after_logging_and_the_mediator_persists(
    world: World,
) -> None:
    audit = AuditMiddleware(audit_store=InMemoryAuditStore())
    factory = EventSourcedMediatorFactory(
        world.events,
        world.uow_factory,
        world.registry,
        outbox_store=world.outbox,
        insert_after={"logging": audit},
    )
    factory.register_event_sourced_type(Order)
    mediator = factory.create()

    assert mediator.pipeline.describe() == (
        "tracing -> logging -> audit -> metrics -> validation -> unit_of_work "
        "-> event_persistence -> outbox -> handler"
    )
    world.mediator = mediator
    await mediator.send(PlaceOrder(order_id="o-1"))
    assert [e.event_type for e in await world.events.load_stream("Order", "o-1")] == ["OrderPlaced"]


def test_the_mediator_places_a_step_before_event_persistence(world: World) -> None:
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=world.events)
    audit = AuditMiddleware(audit_store=InMemoryAuditStore())
    mediator = EventSourcedMediator(
        world.registry,
        world.uow_factory,
        orchestrator,
        insert_before={"event_persistence": audit},
    )

    assert "unit_of_work -> audit -> event_persistence -> handler" in mediator.pipeline.describe()


def test_the_factorys_former_middlewares_keyword_still_works_with_a_warning(world: World) -> None:
    audit = AuditMiddleware(audit_store=InMemoryAuditStore())
    with pytest.warns(DeprecationWarning, match="inner_middlewares"):
        factory = EventSourcedMediatorFactory(
            world.events, world.uow_factory, world.registry, middlewares=[audit]
        )

    assert factory.create().pipeline.describe().endswith("event_persistence -> audit -> handler")


def test_the_factory_refuses_both_names_for_the_inner_middlewares(world: World) -> None:
    audit = AuditMiddleware(audit_store=InMemoryAuditStore())
    with pytest.raises(EventSourcingConfigurationError, match="inner_middlewares only"):
        EventSourcedMediatorFactory(
            world.events,
            world.uow_factory,
            world.registry,
            middlewares=[audit],
            inner_middlewares=[audit],
        )
