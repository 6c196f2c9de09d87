"""The SQL outbox: a claim hides messages from other workers until it expires."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from cqrs_ddd_core.adapters.sqlalchemy import SQLAlchemyOutboxStore
from cqrs_ddd_core.exceptions import SerializationError
from cqrs_ddd_core.persistence import OutboxMessage, OutboxStatus
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


async def enqueue_at(db: Backend, message_id: str, created_at: datetime) -> None:
    uow = db.uow_factory()
    await db.outbox_store.enqueue([OutboxMessage(message_id, "T", {}, created_at)], uow=uow)
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


async def test_every_status_and_time_of_an_enqueued_message_is_stored_as_given(
    db: Backend,
) -> None:
    uow = db.uow_factory()
    await db.outbox_store.enqueue(
        [
            OutboxMessage(
                "m-failed",
                "T",
                {},
                T0,
                status=OutboxStatus.FAILED,
                attempts=2,
                next_attempt_at=T0 + timedelta(minutes=5),
                last_error="broker down",
            ),
            # A status given as its text, as a caller without the enum might.
            OutboxMessage(
                "m-published",
                "T",
                {},
                T0,
                status="published",  # type: ignore[arg-type]
                published_at=T0 + timedelta(seconds=1, microseconds=250),
            ),
        ],
        uow=uow,
    )
    await uow.commit()

    failed = await db.outbox_store.get("m-failed")
    published = await db.outbox_store.get("m-published")
    assert failed is not None
    assert published is not None
    assert (failed.status, failed.attempts, failed.last_error) == (
        OutboxStatus.FAILED,
        2,
        "broker down",
    )
    assert failed.next_attempt_at == T0 + timedelta(minutes=5)
    assert (failed.created_at, failed.published_at) == (T0, None)
    assert published.status is OutboxStatus.PUBLISHED
    assert published.published_at == T0 + timedelta(seconds=1, microseconds=250)
    assert published.next_attempt_at is None


async def test_an_unknown_status_is_refused_when_enqueued_and_nothing_is_staged(
    db: Backend,
) -> None:
    uow = db.uow_factory()
    with pytest.raises(ValueError, match="sent"):
        await db.outbox_store.enqueue(
            [OutboxMessage("m1", "T", {}, T0, status="sent")],  # type: ignore[arg-type]
            uow=uow,
        )
    await uow.commit()

    assert (await db.counts())["outbox"] == 0


async def test_a_claim_measures_the_lag_in_its_transaction_when_asked_or_when_empty(
    db: Backend,
) -> None:
    outbox = SQLAlchemyOutboxStore(db.engine)
    now = T0 + timedelta(hours=1)
    assert await outbox.claim_and_measure((), 10, now=now) == ([], True, None)
    await enqueue(db, 3)
    taken, measured, oldest = await outbox.claim_and_measure((), 2, now=now)
    assert [m.message_id for m in taken] == ["m000", "m001"]
    assert (measured, oldest) == (False, None)  # it claimed something: not asked
    taken, measured, oldest = await outbox.claim_and_measure((), 2, now=now, measure=True)
    assert [m.message_id for m in taken] == ["m002"]
    assert (measured, oldest) == (True, T0)  # claimed, still unpublished
    published = ["m000", "m001", "m002"]
    assert await outbox.claim_and_measure(published, 2, now=now) == ([], True, None)


async def test_the_relay_measures_the_lag_without_a_transaction_of_its_own(db: Backend) -> None:
    from cqrs_ddd_advanced_core.messaging import OutboxRelay

    class Counting(SQLAlchemyOutboxStore):
        lag_queries = 0

        async def oldest_unpublished_at(self) -> datetime | None:
            self.lag_queries += 1
            return await super().oldest_unpublished_at()

    class Sink:
        async def publish(self, message: OutboxMessage) -> None:
            pass

    class Refusing:
        async def publish(self, message: OutboxMessage) -> None:
            raise ConnectionError("nack")

    outbox = Counting(db.engine)
    await enqueue(db, 2)
    relay = OutboxRelay(outbox, Sink(), clock=lambda: T0 + timedelta(seconds=5))
    assert (await relay.run_once()).published == ["m000", "m001"]
    assert relay.lag == 0.0  # the first measurement, after the batch (a query)
    assert outbox.lag_queries == 1
    await enqueue_at(db, "m100", T0 + timedelta(seconds=2))
    broken = OutboxRelay(outbox, Refusing(), clock=lambda: T0 + timedelta(seconds=5))
    assert (await broken.run_once()).failed == ["m100"]
    assert outbox.lag_queries == 2  # its first measurement
    assert (await broken.run_once()).published == []  # m100 waits for its retry
    assert broken.lag == 3.0  # measured by the empty claim, in its transaction
    assert outbox.lag_queries == 2
