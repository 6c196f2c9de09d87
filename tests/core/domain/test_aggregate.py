"""Aggregate roots count their events: versions, original version, pending events."""

from __future__ import annotations

from typing import ClassVar

import pytest
from pydantic import ValidationError

from cqrs_ddd_core.cqrs import CommandResponse
from cqrs_ddd_core.domain import AggregateRoot
from tests.core.shop import Order, OrderPaid, OrderPlaced


def test_a_new_aggregate_starts_at_version_zero_with_nothing_pending() -> None:
    order = Order(id="o-1")

    assert (order.version, order.original_version, order.pending_events) == (0, 0, ())


def test_recording_an_event_stamps_it_with_the_aggregates_identity_and_next_version() -> None:
    order = Order(id="o-1")
    raw = OrderPlaced(amount=5)

    stamped = order.record_event(raw)

    assert (stamped.aggregate_id, stamped.aggregate_type, stamped.aggregate_version) == (
        "o-1",
        "Order",
        1,
    )
    assert raw.aggregate_id is None  # events are immutable: a stamped copy is kept
    assert stamped.event_id == raw.event_id
    assert order.version == 1
    assert order.pending_events == (stamped,)


def test_an_aggregate_loaded_at_version_four_numbers_its_new_events_five_and_six() -> None:
    order = Order(id="o-1", version=4)

    order.record_event(OrderPlaced(amount=1))
    order.pay()

    assert [e.aggregate_version for e in order.pending_events] == [5, 6]
    assert (order.version, order.original_version) == (6, 4)


def test_collecting_events_returns_them_in_order_and_forgets_them_but_not_the_baseline() -> None:
    order = Order.place("o-1", 2)
    order.pay()

    collected = order.collect_events()

    assert [type(e) for e in collected] == [OrderPlaced, OrderPaid]
    assert order.pending_events == ()
    assert order.original_version == 0  # still the expected version for the append
    order.mark_persisted()
    assert order.original_version == 2


def test_the_stream_type_is_the_class_name_unless_the_class_names_it() -> None:
    class Invoice(AggregateRoot):
        aggregate_type: ClassVar[str] = "billing.Invoice"

    class SpecialOrder(Order):
        pass

    assert Order.type_name() == "Order"
    assert Invoice.type_name() == "billing.Invoice"
    assert SpecialOrder.type_name() == "SpecialOrder"
    assert Invoice(id="i-1").record_event(OrderPaid()).aggregate_type == "billing.Invoice"


def test_an_aggregate_refuses_unknown_fields_and_keeps_its_version_out_of_class_state() -> None:
    with pytest.raises(ValidationError):
        Order(id="o-1", colour="red")  # type: ignore[call-arg]
    assert "aggregate_type" not in Order(id="o-1").model_dump()


def test_a_response_built_from_aggregates_carries_their_pending_events() -> None:
    first, second = Order.place("o-1", 1), Order.place("o-2", 2)
    second.pay()

    response = CommandResponse.from_aggregates("done", first, second)

    assert response.result == "done"
    assert [(e.aggregate_id, e.aggregate_version) for e in response.events] == [
        ("o-1", 1),
        ("o-2", 1),
        ("o-2", 2),
    ]
    assert first.pending_events == ()
    assert second.pending_events == ()
