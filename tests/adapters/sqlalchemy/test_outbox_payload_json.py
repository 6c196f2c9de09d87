"""The outbox stores the JSON text a message already carries instead of serialising again."""

from __future__ import annotations

import dataclasses
import json

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from cqrs_ddd_advanced_core.outbox import message_from_event
from cqrs_ddd_core.adapters.sqlalchemy import SQLAlchemyOutboxStore, SQLAlchemyUnitOfWork
from cqrs_ddd_core.domain import DomainEvent
from cqrs_ddd_core.exceptions import SerializationError
from cqrs_ddd_core.persistence import OutboxMessage
from tests.support.backends import Backend


class Noted(DomainEvent):
    text: str
    amount: float


async def stored_payloads(engine: AsyncEngine) -> dict[str, str]:
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT message_id, payload FROM outbox"))).all()
    return {message_id: payload for message_id, payload in rows}


def test_a_message_from_an_event_carries_its_payload_as_json_too() -> None:
    event = Noted(text='naïve "quoted" \' ; DROP', amount=1.5)

    message = message_from_event(event)

    assert message.payload == {"text": 'naïve "quoted" \' ; DROP', "amount": 1.5}
    assert message.payload_json is not None
    assert json.loads(message.payload_json) == message.payload
    assert message == dataclasses.replace(message, payload_json=None)  # not part of equality


async def test_the_store_writes_the_carried_json_and_serialises_the_rest(
    sqlite_db: AsyncEngine,
) -> None:
    carried = message_from_event(Noted(text="ünïcode", amount=2.0))
    by_hand = OutboxMessage("m-2", "Noted", {"text": "x", "amount": 3}, carried.created_at)
    uow = SQLAlchemyUnitOfWork(sqlite_db)

    await SQLAlchemyOutboxStore(sqlite_db).enqueue([carried, by_hand], uow=uow)
    await uow.commit()

    stored = await stored_payloads(sqlite_db)
    assert stored[carried.message_id] == carried.payload_json  # verbatim, not re-serialised
    assert json.loads(stored["m-2"]) == {"text": "x", "amount": 3}


def test_an_event_whose_payload_has_no_json_form_fails_with_a_typed_error() -> None:
    class Odd(DomainEvent):
        value: object

    with pytest.raises(SerializationError):
        message_from_event(Odd(value=object()))


async def test_a_claimed_message_carries_the_stored_json_text_for_the_relay(db: Backend) -> None:
    engine = db.engine
    assert engine is not None
    carried = message_from_event(Noted(text="ünïcode", amount=2.0))
    by_hand = OutboxMessage("m-2", "Noted", {"text": "x", "amount": 3}, carried.created_at)
    store = SQLAlchemyOutboxStore(engine)
    uow = SQLAlchemyUnitOfWork(engine)
    await store.enqueue([carried, by_hand], uow=uow)
    await uow.commit()

    claimed = {m.message_id: m for m in await store.claim_batch(10)}

    async with engine.connect() as conn:  # the text as stored, whatever the driver decodes
        rows = await conn.execute(text("SELECT message_id, CAST(payload AS TEXT) FROM outbox"))
        stored = dict(rows.all())
    assert sorted(claimed) == sorted(stored)
    for message_id, message in claimed.items():
        assert message.payload_json == stored[message_id]  # published as stored
        assert json.loads(message.payload_json) == message.payload
