"""Commands, queries and events are immutable pydantic models with ids."""

from __future__ import annotations

from datetime import UTC
from typing import ClassVar

import pytest
from pydantic import ValidationError

from cqrs_ddd_core.domain import DomainEvent
from tests.core.shop import GetOrder, OrderPlaced, PlaceOrder


def test_a_command_is_immutable_and_refuses_unknown_fields() -> None:
    command = PlaceOrder(order_id="o-1", amount=1)

    with pytest.raises(ValidationError, match="frozen"):
        command.amount = 2  # type: ignore[misc]
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        PlaceOrder(order_id="o-1", amount=1, note="x")  # type: ignore[call-arg]


def test_each_message_gets_its_own_id_and_no_correlation_id_unless_given() -> None:
    first, second = GetOrder(order_id="o-1"), GetOrder(order_id="o-1")

    assert first.message_id != second.message_id
    assert first.correlation_id is None
    assert GetOrder(order_id="o-1", correlation_id="flow").correlation_id == "flow"
    assert PlaceOrder.type_name() == "PlaceOrder"


def test_an_event_has_an_envelope_with_a_utc_timestamp_and_a_payload_of_its_own_fields() -> None:
    event = OrderPlaced(amount=7, metadata={"actor": "alice"})

    assert event.occurred_at.tzinfo is UTC
    assert event.schema_version == 1
    assert (event.aggregate_id, event.correlation_id, event.causation_id) == (None, None, None)
    assert event.payload() == {"amount": 7}
    with pytest.raises(ValidationError):
        event.amount = 8  # type: ignore[misc]


def test_the_stored_event_type_is_the_class_name_unless_the_class_names_it() -> None:
    class Renamed(DomainEvent):
        event_type: ClassVar[str] = "shop.OrderRenamed.v2"

    assert OrderPlaced.type_name() == "OrderPlaced"
    assert Renamed.type_name() == "shop.OrderRenamed.v2"


def test_an_event_refuses_non_finite_numbers_which_have_no_json_form() -> None:
    class Measured(DomainEvent):
        value: float

    with pytest.raises(ValidationError, match="finite"):
        Measured(value=float("inf"))
