"""The same input rules on every backend, checked before any SQL, with a typed error
naming the field and the limit (see cqrs_ddd_core.persistence.limits)."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from cqrs_ddd_core.domain import DomainEvent
from cqrs_ddd_core.domain.messages import utc_now
from cqrs_ddd_core.exceptions import SerializationError, StorageLimitError
from cqrs_ddd_core.persistence import OutboxMessage
from cqrs_ddd_core.persistence.limits import MAX_NAME_LENGTH
from tests.support.accounts import Account, Anything, Deposited
from tests.support.backends import Backend

LONG = "x" * (MAX_NAME_LENGTH + 1)
SURROGATE = "id-\ud800"


class LongNamed(DomainEvent):
    event_type: ClassVar[str] = "E" * (MAX_NAME_LENGTH + 1)


async def refused_append(
    backend: Backend, aggregate_type: str, aggregate_id: str, events: list[Any]
) -> StorageLimitError:
    uow = backend.uow_factory()
    with pytest.raises(StorageLimitError) as caught:
        await backend.event_store.append(
            aggregate_type, aggregate_id, events, expected_version=0, uow=uow
        )
    await uow.commit()  # nothing was staged: the commit writes nothing
    assert await backend.total_rows() == 0
    return caught.value


@pytest.mark.parametrize(
    ("aggregate_type", "aggregate_id", "field", "limit"),
    [
        ("Account", LONG, "aggregate_id", "at most 255 characters"),
        (LONG, "a-1", "aggregate_type", "at most 255 characters"),
        ("Account", "a\x00b", "aggregate_id", "no NUL character"),
        ("Acc\x00ount", "a-1", "aggregate_type", "no NUL character"),
        ("Account", SURROGATE, "aggregate_id", "no lone surrogate"),
        ("Account", "", "aggregate_id", "a non-empty string"),
    ],
)
async def test_a_bad_stream_key_is_refused_naming_the_field_and_the_limit(
    backend: Backend, aggregate_type: str, aggregate_id: str, field: str, limit: str
) -> None:
    error = await refused_append(backend, aggregate_type, aggregate_id, [Deposited(amount=1)])

    assert error.field == field
    assert limit in error.limit
    assert field in str(error)
    assert isinstance(error, SerializationError)


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (LongNamed(), "event_type"),
        (Deposited(amount=1, correlation_id=LONG), "correlation_id"),
        (Deposited(amount=1, causation_id="c\x00"), "causation_id"),
        (Deposited(amount=1, metadata={"k": SURROGATE}), "metadata"),
    ],
)
async def test_a_bad_event_field_is_refused_naming_it(
    backend: Backend, event: DomainEvent, field: str
) -> None:
    error = await refused_append(backend, "Account", "a-1", [event])

    assert error.field == field


async def test_a_payload_holding_a_lone_surrogate_is_refused_before_any_sql(
    backend: Backend,
) -> None:
    uow = backend.uow_factory()
    # pydantic's JSON encoder refuses it first: a SerializationError naming the type.
    with pytest.raises(SerializationError, match=r"Deposited.*surrogates not allowed"):
        await backend.event_store.append(
            "Account", "a-1", [Deposited(amount=1, note=SURROGATE)], expected_version=0, uow=uow
        )
    await uow.commit()
    assert await backend.total_rows() == 0


async def test_the_longest_allowed_names_and_any_valid_unicode_are_stored(
    backend: Backend,
) -> None:
    longest = "é" * MAX_NAME_LENGTH  # characters, not bytes
    uow = backend.uow_factory()
    await backend.event_store.append(
        "Account",
        longest,
        [Anything(value="nul \x00 and emoji 🎉 in a payload are fine")],
        expected_version=0,
        uow=uow,
    )
    await uow.commit()

    [stored] = await backend.event_store.load_stream("Account", longest)
    assert stored.payload == {"value": "nul \x00 and emoji 🎉 in a payload are fine"}


@pytest.mark.parametrize(
    ("aggregate_id", "field"), [(LONG, "aggregate_id"), ("a\x00", "aggregate_id")]
)
async def test_a_state_row_follows_the_same_rules(
    backend: Backend, aggregate_id: str, field: str
) -> None:
    repository = backend.repository(Account)
    uow = backend.uow_factory()

    with pytest.raises(StorageLimitError) as caught:
        repository.save(Account(id=aggregate_id), uow=uow)

    await uow.rollback()
    assert caught.value.field == field


async def test_a_state_holding_a_lone_surrogate_is_refused(backend: Backend) -> None:
    uow = backend.uow_factory()

    with pytest.raises(SerializationError, match=r"Account.*surrogates not allowed"):
        backend.repository(Account).save(Account(id="a-1", owner=SURROGATE), uow=uow)

    await uow.rollback()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"message_id": LONG}, "message_id"),
        ({"aggregate_id": "a\x00"}, "aggregate_id"),
        ({"payload": {"k": SURROGATE}}, "payload"),
    ],
)
async def test_an_outbox_message_follows_the_same_rules(
    backend: Backend, changes: dict[str, Any], field: str
) -> None:
    fields: dict[str, Any] = {
        "message_id": "m-1",
        "message_type": "Deposited",
        "payload": {"amount": 1},
        "created_at": utc_now(),
        **changes,
    }
    uow = backend.uow_factory()

    with pytest.raises(StorageLimitError) as caught:
        await backend.outbox_store.enqueue([OutboxMessage(**fields)], uow=uow)

    await uow.commit()
    assert caught.value.field == field
    assert await backend.total_rows() == 0
