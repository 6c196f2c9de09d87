"""@non_event_sourced: a class attribute, a name registry, honoured by the orchestrator."""

from __future__ import annotations

import pytest

from cqrs_ddd_advanced_core import (
    EventSourcedMediator,
    EventSourcedPersistenceOrchestrator,
    EventSourcingConfigurationError,
    is_non_event_sourced,
    non_event_sourced,
)
from cqrs_ddd_core.domain import AggregateRoot
from tests.advanced.domain import ChangePreferences, UserPreferences, World


def test_the_decorator_marks_the_class_and_its_type_name() -> None:
    @non_event_sourced
    class Settings(AggregateRoot):
        aggregate_type = "settings.v1"

    class SubSettings(Settings):
        pass

    assert Settings.__non_event_sourced__ is True  # type: ignore[attr-defined]
    assert is_non_event_sourced(Settings)
    assert is_non_event_sourced("settings.v1")
    assert is_non_event_sourced(SubSettings)  # the attribute is inherited
    assert not is_non_event_sourced("SubSettings")  # its events carry their own type name
    assert not is_non_event_sourced("Order")


def test_the_decorator_refuses_what_is_not_a_class() -> None:
    with pytest.raises(EventSourcingConfigurationError, match="decorates aggregate classes"):
        non_event_sourced(lambda: None)  # type: ignore[type-var]


async def test_events_of_a_decorated_aggregate_skip_the_store_even_in_strict_mode(
    world: World,
) -> None:
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=world.events)
    mediator = EventSourcedMediator(
        registry=world.registry,
        uow_factory=world.uow_factory,
        event_persistence_orchestrator=orchestrator,
    )

    await mediator.send(ChangePreferences(user_id="u-1", theme="dark"))

    assert await world.events.latest_position() == 0
    assert (await world.preferences.get("u-1")).theme == "dark"
    assert orchestrator.non_event_sourced_types == frozenset({"UserPreferences"})


def test_registering_the_decorated_class_as_non_event_sourced_is_accepted() -> None:
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=World().events)

    orchestrator.register_non_event_sourced_type(UserPreferences)

    assert not orchestrator.is_event_sourced(UserPreferences)
    assert "UserPreferences" in orchestrator.non_event_sourced_types
