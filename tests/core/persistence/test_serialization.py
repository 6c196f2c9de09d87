"""Events are serialised when they are staged, so a bad payload fails inside the transaction."""

from __future__ import annotations

import json
import math
from datetime import datetime

import pytest

from cqrs_ddd_core.adapters.memory import InMemoryEventStore, InMemoryUnitOfWork
from cqrs_ddd_core.domain import DomainEvent
from cqrs_ddd_core.exceptions import SerializationError
from cqrs_ddd_core.persistence.serialization import dumps, encode_event, envelope_fields
from tests.core.shop import OrderPlaced


def test_an_event_is_encoded_with_its_payload_apart_from_its_envelope() -> None:
    event = OrderPlaced(amount=3, correlation_id="flow", metadata={"actor": "alice"})

    pending = encode_event(event, "Order", "o-1", 7)

    assert json.loads(pending.payload_json) == {"amount": 3}
    assert json.loads(pending.metadata_json) == {"actor": "alice"}
    assert (pending.aggregate_type, pending.aggregate_id, pending.version) == ("Order", "o-1", 7)
    assert (pending.event_id, pending.event_type) == (event.event_id, "OrderPlaced")
    assert pending.correlation_id == "flow"
    assert "event_id" in envelope_fields()
    assert "amount" not in envelope_fields()


class Odd(DomainEvent):
    value: float


def test_an_event_with_a_non_finite_float_is_refused_when_it_is_made() -> None:
    with pytest.raises(ValueError, match="finite"):
        Odd(value=math.nan)


async def test_unserialisable_metadata_fails_at_staging_and_nothing_is_staged() -> None:
    store = InMemoryEventStore()
    uow = InMemoryUnitOfWork()
    good = OrderPlaced(amount=1)
    bad = OrderPlaced(amount=2, metadata={"at": datetime(2024, 1, 1)})

    with pytest.raises(SerializationError) as raised:
        await store.append("Order", "o-1", [good, bad], expected_version=0, uow=uow)

    assert raised.value.type_name == "OrderPlaced"
    assert "not JSON serializable" in str(raised.value)
    assert not uow.has_staged  # not even the good event before it


def test_dumps_refuses_values_without_a_json_form() -> None:
    assert dumps({"a": [1, "b"]}, "T") == '{"a":[1,"b"]}'
    with pytest.raises(SerializationError, match="Cannot serialise T"):
        dumps({"x": math.inf}, "T")
    with pytest.raises(SerializationError):
        dumps({"x": object()}, "T")
