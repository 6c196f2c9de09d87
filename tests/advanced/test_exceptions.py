"""The advanced errors: one tree under the project's root, with context attributes."""

from __future__ import annotations

import pytest

import cqrs_ddd_advanced_core.domain.exceptions as exceptions_module
from cqrs_ddd_advanced_core import (
    EventHandlerError,
    EventSourcedAggregateRequiredError,
    EventSourcingConfigurationError,
    InvalidEventHandlerError,
    MissingEventHandlerError,
    StrictValidationViolationError,
    UnroutableEventError,
)
from cqrs_ddd_core.exceptions import ConfigurationError, CqrsDddError


def test_every_error_descends_from_the_projects_root_error() -> None:
    for name in exceptions_module.__all__:
        error = getattr(exceptions_module, name)
        assert issubclass(error, CqrsDddError), name
        assert name in (exceptions_module.__doc__ or ""), f"{name} is not drawn in the tree"


def test_the_tree_has_the_documented_branches() -> None:
    assert issubclass(MissingEventHandlerError, EventHandlerError)
    assert issubclass(InvalidEventHandlerError, EventHandlerError)
    assert issubclass(EventSourcingConfigurationError, ConfigurationError)
    assert issubclass(EventSourcedAggregateRequiredError, StrictValidationViolationError)
    assert issubclass(UnroutableEventError, StrictValidationViolationError)
    # The seed lists it among the event-handler errors (and the design it
    # comes from derives it from EventHandlerError).
    assert issubclass(StrictValidationViolationError, EventHandlerError)


def test_except_event_handler_error_catches_a_persistence_rule_violation() -> None:
    with pytest.raises(EventHandlerError) as caught:
        raise UnroutableEventError("no stream", event_type="Orphan")
    assert caught.value.event_type == "Orphan"
    assert caught.value.aggregate_type is None
    assert str(caught.value) == "Orphan (no stream) cannot be persisted: no stream"


def test_errors_carry_their_context() -> None:
    missing = MissingEventHandlerError(
        aggregate_type="Order", event_type="Shipped", method_name="apply_Shipped"
    )
    required = EventSourcedAggregateRequiredError(
        aggregate_type="Cart", event_type="ItemAdded", aggregate_id="c-1"
    )
    invalid = InvalidEventHandlerError("bad", aggregate_type="Order", event_type="X")
    config = EventSourcingConfigurationError("nope", aggregate_type="Order")

    assert (missing.aggregate_type, missing.event_type, missing.method_name) == (
        "Order",
        "Shipped",
        "apply_Shipped",
    )
    assert "apply_Shipped" in str(missing)
    assert (required.aggregate_type, required.aggregate_id, required.event_type) == (
        "Cart",
        "c-1",
        "ItemAdded",
    )
    assert "Cart:c-1" in str(required)
    assert invalid.reason == "bad"
    assert config.aggregate_type == "Order"
