"""The in-memory outbox: messages commit with the transaction and are claimed after it."""

from __future__ import annotations

from datetime import timedelta

import pytest

from cqrs_ddd_core.adapters.memory import InMemoryOutboxStore, InMemoryUnitOfWork
from cqrs_ddd_core.domain import utc_now
from cqrs_ddd_core.exceptions import PersistenceError
from cqrs_ddd_core.persistence import OutboxMessage, OutboxStatus


def message(message_id: str) -> OutboxMessage:
    return OutboxMessage(message_id, "OrderPlaced", {"amount": 1}, utc_now(), correlation_id="c")


async def test_enqueued_messages_are_claimable_only_after_commit() -> None:
    outbox = InMemoryOutboxStore()
    uow = InMemoryUnitOfWork()
    await outbox.enqueue([message("m-1"), message("m-2")], uow=uow)

    assert await outbox.claim_batch() == []
    await uow.commit()

    claimed = await outbox.claim_batch(limit=1)
    assert [m.message_id for m in claimed] == ["m-1"]
    assert len(outbox) == 2


async def test_a_rollback_discards_the_enqueued_messages() -> None:
    outbox = InMemoryOutboxStore()
    uow = InMemoryUnitOfWork()
    await outbox.enqueue([message("m-1")], uow=uow)

    await uow.rollback()

    assert len(outbox) == 0
    assert await outbox.get("m-1") is None


async def test_a_duplicate_message_id_fails_the_commit() -> None:
    outbox = InMemoryOutboxStore()
    uow = InMemoryUnitOfWork()
    await outbox.enqueue([message("m-1"), message("m-1")], uow=uow)

    with pytest.raises(PersistenceError, match="m-1 already exists"):
        await uow.commit()

    assert len(outbox) == 0


async def test_published_messages_are_not_claimed_and_failed_ones_wait_for_their_retry() -> None:
    outbox = InMemoryOutboxStore()
    uow = InMemoryUnitOfWork()
    await outbox.enqueue([message("m-1"), message("m-2"), message("m-3")], uow=uow)
    await uow.commit()
    now = utc_now()

    await outbox.mark_published(["m-1"], at=now)
    await outbox.mark_failed("m-2", "broker down", next_attempt_at=now + timedelta(minutes=1))

    assert [m.message_id for m in await outbox.claim_batch(now=now)] == ["m-3"]
    later = await outbox.claim_batch(now=now + timedelta(minutes=2))
    assert [m.message_id for m in later] == ["m-2", "m-3"]
    failed = await outbox.get("m-2")
    assert failed is not None
    assert (failed.status, failed.attempts, failed.last_error) == (
        OutboxStatus.FAILED,
        1,
        "broker down",
    )
    published = await outbox.get("m-1")
    assert published is not None
    assert published.published_at == now


async def test_claimed_messages_are_copies_that_do_not_change_the_store() -> None:
    outbox = InMemoryOutboxStore()
    uow = InMemoryUnitOfWork()
    await outbox.enqueue([message("m-1")], uow=uow)
    await uow.commit()

    [claimed] = await outbox.claim_batch()
    claimed.status = OutboxStatus.PUBLISHED

    stored = await outbox.get("m-1")
    assert stored is not None
    assert stored.status is OutboxStatus.PENDING
