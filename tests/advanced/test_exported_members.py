"""Every advanced package exports exactly its public names, sorted, and the seed's names."""

from __future__ import annotations

import importlib
import inspect

import pytest

PACKAGES = [
    "cqrs_ddd_advanced_core",
    "cqrs_ddd_advanced_core.cqrs",
    "cqrs_ddd_advanced_core.decorators",
    "cqrs_ddd_advanced_core.domain",
    "cqrs_ddd_advanced_core.event_sourcing",
    "cqrs_ddd_advanced_core.middleware",
    "cqrs_ddd_advanced_core.messaging",
    "cqrs_ddd_advanced_core.outbox",
    "cqrs_ddd_advanced_core.projections",
    "cqrs_ddd_advanced_core.sagas",
    "cqrs_ddd_advanced_core.adapters.memory",
    "cqrs_ddd_advanced_core.adapters.sqlalchemy",
]

SEED_ROOT_EXPORTS = {
    "EventSourcedMediator",
    "EventSourcedMediatorFactory",
    "EventSourcedPersistenceOrchestrator",
    "non_event_sourced",
    "EventHandlerError",
    "MissingEventHandlerError",
    "InvalidEventHandlerError",
    "StrictValidationViolationError",
    "EventSourcedAggregateRequiredError",
    "EventSourcingConfigurationError",
}


@pytest.mark.parametrize("name", PACKAGES)
def test_public_names_are_exactly_all_and_all_is_sorted(name: str) -> None:
    package = importlib.import_module(name)
    public = {
        attr
        for attr, value in vars(package).items()
        if not attr.startswith("_")
        and not inspect.ismodule(value)
        and attr != "annotations"  # from __future__
    }

    assert public == set(package.__all__)
    assert list(package.__all__) == sorted(package.__all__)


def test_the_package_root_exports_the_seeds_names() -> None:
    root = importlib.import_module("cqrs_ddd_advanced_core")

    assert set(root.__all__) >= SEED_ROOT_EXPORTS


def test_the_seeds_import_paths_work() -> None:
    from cqrs_ddd_advanced_core.cqrs import EventSourcedMediator, EventSourcedMediatorFactory
    from cqrs_ddd_advanced_core.decorators import non_event_sourced
    from cqrs_ddd_advanced_core.domain import (
        EventHandlerError,
        EventSourcedAggregateRequiredError,
        EventSourcingConfigurationError,
        InvalidEventHandlerError,
        MissingEventHandlerError,
        StrictValidationViolationError,
    )
    from cqrs_ddd_advanced_core.event_sourcing import EventSourcedPersistenceOrchestrator
    from cqrs_ddd_core.cqrs import Mediator

    root = importlib.import_module("cqrs_ddd_advanced_core")
    for exported in (
        EventSourcedMediator,
        EventSourcedMediatorFactory,
        non_event_sourced,
        EventHandlerError,
        EventSourcedAggregateRequiredError,
        EventSourcingConfigurationError,
        InvalidEventHandlerError,
        MissingEventHandlerError,
        StrictValidationViolationError,
        EventSourcedPersistenceOrchestrator,
    ):
        assert getattr(root, exported.__name__) is exported
    assert issubclass(EventSourcedMediator, Mediator)
