"""The outbox store contract, for every adapter (see conftest)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cqrs_ddd_core.exceptions import PersistenceError
from cqrs_ddd_core.persistence import OutboxMessage, OutboxStatus
from tests.support.backends import Backend

T0 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)


def message(message_id: str, created_at: datetime = T0, **fields: object) -> OutboxMessage:
    return OutboxMessage(
        message_id=message_id,
        message_type="Deposited",
        payload={"amount": 5, "note": "café \"quoted\" 'single'"},
        created_at=created_at,
        aggregate_type="Account",
        aggregate_id="a1",
        correlation_id="corr",
        causation_id="cause",
        trace_context={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        **fields,  # type: ignore[arg-type]
    )


async def enqueue(backend: Backend, *messages: OutboxMessage) -> None:
    uow = backend.uow_factory()
    await backend.outbox_store.enqueue(list(messages), uow=uow)
    await uow.commit()


async def test_an_enqueued_message_is_stored_with_every_field(backend: Backend) -> None:
    sent = message("m1")
    await enqueue(backend, sent)

    stored = await backend.outbox_store.get("m1")

    assert stored == sent
    assert stored.status is OutboxStatus.PENDING
    assert await backend.outbox_store.get("missing") is None


async def test_a_rolled_back_unit_of_work_enqueues_nothing(backend: Backend) -> None:
    uow = backend.uow_factory()
    await backend.outbox_store.enqueue([message("m1")], uow=uow)
    await uow.rollback()

    assert await backend.outbox_store.get("m1") is None


async def test_claim_batch_returns_due_messages_oldest_first_up_to_the_limit(
    backend: Backend,
) -> None:
    await enqueue(backend, message("m1", T0))
    await enqueue(backend, message("m2", T0 + timedelta(seconds=1)))
    await enqueue(backend, message("later", T0, next_attempt_at=T0 + timedelta(hours=1)))
    await enqueue(backend, message("m3", T0 + timedelta(seconds=2)))

    claimed = await backend.outbox_store.claim_batch(2, now=T0 + timedelta(minutes=1))

    assert [m.message_id for m in claimed] == ["m1", "m2"]
    assert claimed[0].payload == message("m1").payload


async def test_published_messages_are_not_claimed_again(backend: Backend) -> None:
    await enqueue(backend, message("m1"), message("m2"))
    published_at = T0 + timedelta(seconds=3)

    await backend.outbox_store.mark_published(["m1"], at=published_at)

    stored = await backend.outbox_store.get("m1")
    assert stored.status is OutboxStatus.PUBLISHED
    assert stored.published_at == published_at
    claimed = await backend.outbox_store.claim_batch(now=T0 + timedelta(minutes=1))
    assert [m.message_id for m in claimed] == ["m2"]


async def test_a_failed_message_is_retried_when_its_next_attempt_is_due(backend: Backend) -> None:
    await enqueue(backend, message("m1"))
    retry_at = T0 + timedelta(minutes=5)

    await backend.outbox_store.mark_failed("m1", "broker down", next_attempt_at=retry_at)

    stored = await backend.outbox_store.get("m1")
    assert (stored.status, stored.attempts, stored.last_error) == (
        OutboxStatus.FAILED,
        1,
        "broker down",
    )
    assert stored.next_attempt_at == retry_at
    assert await backend.outbox_store.claim_batch(now=retry_at - timedelta(seconds=1)) == []
    due = await backend.outbox_store.claim_batch(now=retry_at)
    assert [(m.message_id, m.attempts) for m in due] == [("m1", 1)]


async def test_a_message_id_is_enqueued_once(backend: Backend) -> None:
    await enqueue(backend, message("m1"))

    with pytest.raises(PersistenceError):
        await enqueue(backend, message("m1"))

    assert (await backend.counts())["outbox"] == 1


async def test_a_claimed_message_is_not_claimed_again_until_its_claim_times_out(
    backend: Backend,
) -> None:
    await enqueue(backend, message("m1", T0))
    first_worker = await backend.outbox_store.claim_batch(now=T0 + timedelta(seconds=1))
    second_worker = await backend.outbox_store.claim_batch(now=T0 + timedelta(seconds=2))
    after_timeout = await backend.outbox_store.claim_batch(now=T0 + timedelta(minutes=5))

    assert [m.message_id for m in first_worker] == ["m1"]
    assert second_worker == []
    assert [m.message_id for m in after_timeout] == ["m1"]


async def test_the_schema_version_is_stored_and_read_back_by_every_read(
    backend: Backend,
) -> None:
    await enqueue(backend, message("v3", schema_version=3), message("unknown"))

    stored = await backend.outbox_store.get("v3")
    claimed = await backend.outbox_store.claim_batch(now=T0 + timedelta(minutes=1))
    await backend.outbox_store.mark_dead("v3", "gave up")
    (dead,) = await backend.outbox_store.dead_letters()

    assert stored.schema_version == 3
    assert [(m.message_id, m.schema_version) for m in claimed] == [("v3", 3), ("unknown", None)]
    assert (await backend.outbox_store.get("unknown")).schema_version is None  # NULL stays NULL
    assert (dead.message_id, dead.schema_version) == ("v3", 3)
