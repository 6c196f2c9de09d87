"""The upcaster registry: one step per version, applied as a chain, never on the stored row."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import create_model

from cqrs_ddd_advanced_core.domain import EventSchemaVersionError, EventSourcingConfigurationError
from cqrs_ddd_advanced_core.event_sourcing import UpcasterRegistry
from cqrs_ddd_core import DomainEvent
from cqrs_ddd_core.persistence import OutboxMessage, StoredEvent


class OrderPlaced(DomainEvent):
    total_cents: int
    currency: str
    schema_version: int = 3


def stored(payload: dict[str, Any], version: int, event_type: str = "OrderPlaced") -> StoredEvent:
    return StoredEvent(
        position=1,
        event_id="e-1",
        aggregate_type="Order",
        aggregate_id="o-1",
        version=1,
        event_type=event_type,
        schema_version=version,
        payload=payload,
        metadata={},
        occurred_at=datetime(2024, 1, 1, tzinfo=UTC),
        correlation_id=None,
        causation_id=None,
    )


def three_versions() -> UpcasterRegistry:
    registry = UpcasterRegistry()

    @registry.step("OrderPlaced", from_version=1)
    def add_currency(payload: dict[str, Any]) -> dict[str, Any]:
        payload["currency"] = "EUR"
        return payload

    @registry.step(OrderPlaced, from_version=2)
    def cents(payload: dict[str, Any]) -> dict[str, Any]:
        return {"total_cents": payload.pop("total") * 100, **payload}

    registry.register_event(OrderPlaced)
    return registry


def test_a_v1_event_is_read_through_every_step_to_the_current_version() -> None:
    registry = three_versions()
    old = stored({"total": 12}, 1)

    new = registry.upcast(old)

    assert new.schema_version == 3
    assert new.payload == {"total_cents": 1200, "currency": "EUR"}
    assert OrderPlaced.model_validate(new.payload).total_cents == 1200


def test_upcasting_never_changes_the_stored_event_or_its_payload() -> None:
    registry = three_versions()
    payload = {"total": 12, "nested": {"a": [1]}}
    old = stored(payload, 1)

    registry.upcast(old)

    assert old.payload == {"total": 12, "nested": {"a": [1]}}
    assert old.schema_version == 1


def test_a_v2_event_takes_only_the_remaining_step() -> None:
    registry = three_versions()

    assert registry.upcast(stored({"total": 1, "currency": "USD"}, 2)).payload == {
        "total_cents": 100,
        "currency": "USD",
    }


def test_an_event_at_the_current_version_or_of_another_type_is_returned_as_is() -> None:
    registry = three_versions()
    current = stored({"total_cents": 1, "currency": "EUR"}, 3)
    other = stored({"x": 1}, 1, event_type="Other")

    assert registry.upcast(current) is current
    assert registry(other) is other


def test_a_missing_step_raises_a_typed_error_naming_it() -> None:
    registry = UpcasterRegistry()
    registry.register("OrderPlaced", 2, lambda p: p)
    registry.register_event(OrderPlaced)

    with pytest.raises(EventSchemaVersionError) as caught:
        registry.upcast(stored({"total": 1}, 1))

    error = caught.value
    assert (error.event_type, error.stored_version, error.current_version) == ("OrderPlaced", 1, 3)
    assert error.missing_step == 1
    assert error.event_id == "e-1"


def test_a_version_newer_than_the_code_raises_a_typed_error() -> None:
    with pytest.raises(EventSchemaVersionError) as caught:
        three_versions().upcast(stored({"total_cents": 1, "currency": "EUR"}, 4))

    assert caught.value.missing_step is None
    assert "newer" in str(caught.value)


def test_without_a_registered_class_the_current_version_is_one_past_the_last_step() -> None:
    registry = UpcasterRegistry()
    registry.register("Renamed", 1, lambda p: {"name": p["title"]})

    assert registry.current_version("Renamed") == 2
    assert registry.upcast(stored({"title": "x"}, 1, "Renamed")).payload == {"name": "x"}
    assert registry.current_version("Unknown") is None


def test_upcast_payload_serves_readers_that_hold_only_a_payload() -> None:
    payload, version = three_versions().upcast_payload("OrderPlaced", {"total": 2}, 1)

    assert (payload, version) == ({"total_cents": 200, "currency": "EUR"}, 3)


@pytest.mark.parametrize(
    ("event_type", "from_version", "step"),
    [("OrderPlaced", 0, len), ("OrderPlaced", "1", len), ("", 1, len), ("OrderPlaced", 1, 42)],
)
def test_bad_registrations_are_refused(event_type: str, from_version: Any, step: Any) -> None:
    with pytest.raises(EventSourcingConfigurationError):
        UpcasterRegistry().register(event_type, from_version, step)


def test_two_steps_from_one_version_are_refused() -> None:
    registry = UpcasterRegistry()
    registry.register("OrderPlaced", 1, lambda p: p)

    with pytest.raises(EventSourcingConfigurationError, match="registered already"):
        registry.register("OrderPlaced", 1, lambda p: p)


def test_a_step_past_the_current_version_is_refused_either_way_round() -> None:
    registry = UpcasterRegistry()
    registry.register_event(OrderPlaced)
    with pytest.raises(EventSourcingConfigurationError, match="past the current"):
        registry.register("OrderPlaced", 3, lambda p: p)

    other = UpcasterRegistry()
    other.register("OrderPlaced", 3, lambda p: p)
    with pytest.raises(EventSourcingConfigurationError, match="current version is v3"):
        other.register_event(OrderPlaced)


async def test_a_projection_runner_with_upcasters_sees_current_events() -> None:
    from cqrs_ddd_advanced_core.projections import Projection, ProjectionRunner
    from cqrs_ddd_core.adapters.memory import (
        InMemoryEventStore,
        InMemoryProjectionStore,
        InMemoryProjectionTransaction,
        InMemoryUnitOfWork,
    )

    class OrderPlacedV1(DomainEvent):
        event_type = "OrderPlaced"
        total: int

    events = InMemoryEventStore()
    uow = InMemoryUnitOfWork()
    await events.append("Order", "o-1", [OrderPlacedV1(total=5)], expected_version=0, uow=uow)
    await uow.commit()
    seen: list[tuple[int, dict[str, Any]]] = []
    projection = Projection[InMemoryProjectionTransaction]("seen")

    @projection.on(OrderPlaced)
    async def placed(event: StoredEvent, tx: InMemoryProjectionTransaction) -> None:
        seen.append((event.schema_version, event.payload))

    runner = ProjectionRunner(
        projection, events=events, store=InMemoryProjectionStore(), upcasters=three_versions()
    )
    await runner.catch_up()

    assert seen == [(3, {"total_cents": 500, "currency": "EUR"})]


def _trail_step(version: int) -> Any:
    def step(payload: dict[str, Any]) -> dict[str, Any]:
        payload["trail"].append(version)
        return payload

    return step


@given(
    steps=st.integers(min_value=1, max_value=8),
    data=st.data(),
)
def test_the_chain_applies_exactly_the_steps_from_the_stored_version_in_order(
    steps: int, data: st.DataObject
) -> None:
    registry = UpcasterRegistry()
    missing = data.draw(st.one_of(st.none(), st.integers(min_value=1, max_value=steps)))
    for version in range(1, steps + 1):
        if version != missing:
            registry.register("Evolving", version, _trail_step(version))
    current = steps + 1
    registry.register_event(
        create_model("Evolving", __base__=DomainEvent, schema_version=(int, current))
    )
    stored_version = data.draw(st.integers(min_value=1, max_value=current))
    old = stored({"trail": []}, stored_version, event_type="Evolving")

    if missing is not None and stored_version <= missing:
        with pytest.raises(EventSchemaVersionError) as caught:
            registry.upcast(old)
        assert caught.value.missing_step == missing
    else:
        new = registry.upcast(old)
        assert new.schema_version == current
        assert new.payload["trail"] == list(range(stored_version, current))
    assert old.payload == {"trail": []}


def outbox_message(payload: dict[str, Any], version: int | None) -> OutboxMessage:
    return OutboxMessage(
        message_id="e-1",
        message_type="OrderPlaced",
        payload=payload,
        payload_json=json.dumps(payload),
        created_at=datetime(2024, 1, 1, tzinfo=UTC),
        schema_version=version,
    )


def test_an_outbox_message_is_upcast_to_the_current_version_on_a_copy() -> None:
    claimed = outbox_message({"total": 12, "nested": {"a": [1]}}, 1)

    outgoing = three_versions().upcast_message(claimed)

    assert outgoing.schema_version == 3
    assert outgoing.payload == {"total_cents": 1200, "currency": "EUR", "nested": {"a": [1]}}
    assert outgoing.payload_json is None  # the publisher must not send the old text
    assert claimed.payload == {"total": 12, "nested": {"a": [1]}}
    assert claimed.schema_version == 1
    assert json.loads(claimed.payload_json or "") == claimed.payload


def test_an_outbox_message_of_unknown_version_current_version_or_type_is_returned_as_is() -> None:
    registry = three_versions()
    unknown = outbox_message({"total": 12}, None)  # a row written before rows recorded it
    current = outbox_message({"total_cents": 1, "currency": "EUR"}, 3)
    other = dataclasses.replace(outbox_message({"x": 1}, 1), message_type="Other")

    assert registry.upcast_message(unknown) is unknown
    assert registry.upcast_message(current) is current
    assert registry.upcast_message(other) is other


@pytest.mark.parametrize(("version", "missing_step"), [(1, 1), (4, None)])
def test_an_outbox_message_with_no_path_raises_a_typed_error_naming_the_message(
    version: int, missing_step: int | None
) -> None:
    registry = UpcasterRegistry()
    registry.register("OrderPlaced", 2, lambda p: p)
    registry.register_event(OrderPlaced)

    with pytest.raises(EventSchemaVersionError) as caught:
        registry.upcast_message(outbox_message({"total": 1}, version))

    assert (caught.value.event_id, caught.value.stored_version) == ("e-1", version)
    assert caught.value.missing_step == missing_step
