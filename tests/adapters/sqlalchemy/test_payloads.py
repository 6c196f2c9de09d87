"""Payloads are stored and read back verbatim; one that cannot be stored writes nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cqrs_ddd_core.exceptions import SerializationError
from cqrs_ddd_core.persistence import OutboxMessage
from tests.adapters.sqlalchemy.app import App
from tests.support.accounts import Account, Anything, DepositMany
from tests.support.backends import Backend, empty_tables

TRICKY = [
    "it's",
    'say "hi"',
    "'); DROP TABLE events; --",
    "Robert'); DELETE FROM outbox WHERE ('1'='1",
    "$1 %s %(name)s ? :name",
    "back\\slash \\u0000 \\n",
    "tab\tnewline\nreturn\rnul\x00bell\x07",
    "Zoë Ångström — naïve café",
    "日本語のテキスト 中文 한국어",
    "مرحبا بالعالم עברית",
    "emoji 🎉👩‍👩‍👧‍👦 and astral 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",  # noqa: RUF001
    "e\u0301 combining",
    "x" * (1024 * 1024),  # 1 MiB
]


async def store_and_read(db: Backend, value: Any, metadata: dict[str, Any]) -> tuple[Any, ...]:
    event = Anything(value=value, metadata=metadata)
    account = Account.open("a1", owner=value if isinstance(value, str) else "owner")
    message = OutboxMessage(event.event_id, "Anything", {"value": value}, datetime.now(UTC))
    uow = db.uow_factory()
    await db.event_store.append("Account", "a1", [event], expected_version=0, uow=uow)
    await db.outbox_store.enqueue([message], uow=uow)
    db.repository(Account).save(account, uow=uow)
    await uow.commit()
    (stored,) = await db.event_store.load_stream("Account", "a1")
    outbox = await db.outbox_store.get(event.event_id)
    state = await db.repository(Account).get("a1")
    return stored, outbox, state


@pytest.mark.parametrize("text", TRICKY, ids=lambda t: repr(t[:24]))
async def test_tricky_text_round_trips_verbatim(db: Backend, text: str) -> None:
    metadata = {"z-last": text, "a-first": [text, {"nested": text}], "n": 1.5}

    stored, outbox, state = await store_and_read(db, text, metadata)

    assert stored.payload == {"value": text}
    assert stored.metadata == metadata
    assert list(stored.metadata) == ["z-last", "a-first", "n"]  # key order kept too
    assert outbox.payload == {"value": text}
    assert state.owner == text


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    value=st.recursive(
        st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=12,
    )
)
async def test_any_json_payload_round_trips(db: Backend, value: Any) -> None:
    assert db.engine is not None
    await empty_tables(db.engine)

    stored, outbox, _ = await store_and_read(db, value, {"value": value})

    assert stored.payload == {"value": value}
    assert stored.metadata == {"value": value}
    assert outbox.payload == {"value": value}


async def test_an_unserialisable_event_fails_the_command_and_writes_nothing(db: Backend) -> None:
    # Without the outbox step: the advanced OutboxMiddleware builds its messages
    # with DomainEvent.payload(), which raises pydantic's own error today.
    app = App(db, with_outbox=False)
    app.faults.armed = "unserialisable"

    with pytest.raises(SerializationError):
        await app.mediator.send(DepositMany(account_id="a1", items=[(1, "x")]))

    counts = await db.counts()
    assert (counts["events"], counts["outbox"], counts["aggregate_state"]) == (0, 0, 0)
    assert "success" not in [r.outcome for r in await db.audit_store.list_records()]


async def test_an_unserialisable_outbox_payload_or_state_is_refused_at_staging(
    db: Backend,
) -> None:
    uow = db.uow_factory()
    with pytest.raises(SerializationError):
        await db.outbox_store.enqueue(
            [OutboxMessage("m1", "T", {"x": object()}, datetime.now(UTC))], uow=uow
        )

    class Odd(Account):
        extra: Any = None

    with pytest.raises(SerializationError):
        db.repository(Odd).save(Odd(id="o1", extra=object()), uow=uow)
    await uow.commit()

    assert await db.total_rows() == 0
