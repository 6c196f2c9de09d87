"""The SQL outbox: a claim hides messages from other workers until it expires."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from cqrs_ddd_core.adapters.sqlalchemy import SQLAlchemyOutboxStore
from cqrs_ddd_core.exceptions import SerializationError
from cqrs_ddd_core.persistence import OutboxMessage
from tests.support.backends import Backend

T0 = datetime(2024, 1, 1, tzinfo=UTC)


async def enqueue(db: Backend, count: int) -> None:
    uow = db.uow_factory()
    await db.outbox_store.enqueue(
        [
            OutboxMessage(f"m{i:03d}", "T", {"i": i}, T0 + timedelta(seconds=i))
            for i in range(count)
        ],
        uow=uow,
    )
    await uow.commit()


async def test_concurrent_workers_never_claim_the_same_message(db: Backend) -> None:
    await enqueue(db, 60)
    assert db.engine is not None
    workers = [SQLAlchemyOutboxStore(db.engine) for _ in range(4)]

    batches = await asyncio.gather(
        *(w.claim_batch(20, now=T0 + timedelta(minutes=1)) for w in workers)
    )

    claimed = [m.message_id for batch in batches for m in batch]
    assert len(claimed) == len(set(claimed)) == 60


async def test_a_claim_expires_after_the_claim_timeout(db: Backend) -> None:
    assert db.engine is not None
    outbox = SQLAlchemyOutboxStore(db.engine, claim_timeout=timedelta(seconds=30))
    await enqueue(db, 2)
    now = T0 + timedelta(minutes=1)

    first = await outbox.claim_batch(now=now)
    again = await outbox.claim_batch(now=now + timedelta(seconds=29))
    later = await outbox.claim_batch(now=now + timedelta(seconds=30))

    assert [m.message_id for m in first] == ["m000", "m001"]
    assert again == []
    assert [m.message_id for m in later] == ["m000", "m001"]


async def test_an_unknown_message_id_changes_nothing(db: Backend) -> None:
    await enqueue(db, 1)

    await db.outbox_store.mark_published(["nope"])
    await db.outbox_store.mark_failed("nope", "x", next_attempt_at=T0)

    assert [
        m.message_id for m in await db.outbox_store.claim_batch(now=T0 + timedelta(hours=1))
    ] == ["m000"]


async def test_a_payload_without_a_json_form_is_refused_when_enqueued(db: Backend) -> None:
    uow = db.uow_factory()
    with pytest.raises(SerializationError):
        await db.outbox_store.enqueue([OutboxMessage("m1", "T", {"at": T0}, T0)], uow=uow)
    await uow.commit()

    assert (await db.counts())["outbox"] == 0


def test_the_claim_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="claim_timeout"):
        SQLAlchemyOutboxStore(None, claim_timeout=timedelta(0))  # type: ignore[arg-type]
