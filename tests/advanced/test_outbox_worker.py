"""The outbox service and worker: batches, publishing, retries with exponential backoff."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from cqrs_ddd_advanced_core.event_sourcing import UpcasterRegistry
from cqrs_ddd_advanced_core.outbox import (
    Backoff,
    OutboxService,
    OutboxWorker,
    message_from_event,
)
from cqrs_ddd_core.adapters.memory import InMemoryOutboxStore, InMemoryUnitOfWork
from cqrs_ddd_core.persistence import OutboxMessage, OutboxStatus
from tests.advanced.domain import OrderPlaced

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class FlakyPublisher:
    """Fails the first ``failures[message_id]`` attempts of a message, then accepts it."""

    def __init__(self, failures: dict[str, int] | None = None) -> None:
        self.failures = dict(failures or {})
        self.published: list[str] = []
        self.attempts: list[str] = []

    async def publish(self, message: OutboxMessage) -> None:
        self.attempts.append(message.message_id)
        if self.failures.get(message.message_id, 0) > 0:
            self.failures[message.message_id] -= 1
            raise ConnectionError("broker unavailable")
        self.published.append(message.message_id)


async def filled_outbox(count: int) -> tuple[InMemoryOutboxStore, list[str]]:
    store = InMemoryOutboxStore()
    events = [
        OrderPlaced(customer_id="c", total=i, aggregate_type="Order", aggregate_id=f"o-{i}")
        for i in range(count)
    ]
    uow = InMemoryUnitOfWork()
    await store.enqueue([message_from_event(e, created_at=T0) for e in events], uow=uow)
    await uow.commit()
    return store, [e.event_id for e in events]


def test_backoff_grows_exponentially_up_to_its_maximum() -> None:
    backoff = Backoff(initial=timedelta(seconds=2), factor=3, maximum=timedelta(seconds=60))

    delays = [backoff.delay(attempt).total_seconds() for attempt in range(1, 6)]

    assert delays == [2, 6, 18, 54, 60]
    with pytest.raises(ValueError, match="Backoff"):
        Backoff(initial=timedelta(0))


async def test_run_once_publishes_a_batch_and_marks_it_published() -> None:
    store, ids = await filled_outbox(5)
    publisher = FlakyPublisher()
    clock = Clock()
    worker = OutboxWorker(store, publisher, batch_size=3, clock=clock)

    first = await worker.run_once()
    second = await worker.run_once()

    assert first.published == ids[:3]
    assert second.published == ids[3:]
    assert publisher.published == ids
    for message_id in ids:
        message = await store.get(message_id)
        assert message is not None
        assert (message.status, message.published_at, message.attempts) == (
            OutboxStatus.PUBLISHED,
            T0,
            0,
        )
    assert (await worker.run_once()).processed == 0


async def test_a_failed_publish_is_retried_after_an_exponential_backoff() -> None:
    store, ids = await filled_outbox(3)
    flaky = ids[1]
    publisher = FlakyPublisher({flaky: 2})
    clock = Clock()
    backoff = Backoff(initial=timedelta(seconds=10), factor=2, maximum=timedelta(minutes=5))
    worker = OutboxWorker(store, publisher, batch_size=10, backoff=backoff, clock=clock)

    result = await worker.run_once()

    assert (result.published, result.failed) == ([ids[0], ids[2]], [flaky])
    message = await store.get(flaky)
    assert message is not None
    assert message.status is OutboxStatus.FAILED
    assert message.attempts == 1
    assert message.next_attempt_at == T0 + timedelta(seconds=10)
    assert message.last_error == "ConnectionError: broker unavailable"

    clock.now = T0 + timedelta(seconds=5)  # not due yet
    assert (await worker.run_once()).processed == 0

    clock.now = T0 + timedelta(seconds=10)
    assert (await worker.run_once()).failed == [flaky]
    message = await store.get(flaky)
    assert message is not None
    assert message.attempts == 2
    assert message.next_attempt_at == clock.now + timedelta(seconds=20)

    clock.now += timedelta(seconds=20)
    assert (await worker.run_once()).published == [flaky]
    message = await store.get(flaky)
    assert message is not None
    assert (message.status, message.attempts, message.published_at) == (
        OutboxStatus.PUBLISHED,
        2,
        clock.now,
    )
    assert publisher.attempts.count(flaky) == 3


async def test_run_drains_the_outbox_until_stopped() -> None:
    store, ids = await filled_outbox(7)
    publisher = FlakyPublisher({ids[0]: 1})
    stop = asyncio.Event()
    worker = OutboxWorker(
        store,
        publisher,
        batch_size=2,
        poll_interval=0.01,
        backoff=Backoff(initial=timedelta(milliseconds=20), maximum=timedelta(milliseconds=20)),
    )

    task = asyncio.create_task(worker.run(stop))
    for _ in range(200):
        if len(publisher.published) == len(ids):
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, timeout=1)

    assert sorted(publisher.published) == sorted(ids)
    statuses = {(await store.get(i)).status for i in ids}  # type: ignore[union-attr]
    assert statuses == {OutboxStatus.PUBLISHED}


async def test_a_store_error_does_not_stop_the_worker() -> None:
    third_call = asyncio.Event()

    class BrokenOnce(InMemoryOutboxStore):
        calls = 0

        async def claim_batch(
            self, limit: int = 100, *, now: datetime | None = None
        ) -> list[OutboxMessage]:
            BrokenOnce.calls += 1
            if BrokenOnce.calls == 1:
                raise OSError("database restarting")
            if BrokenOnce.calls == 3:
                third_call.set()
            return await super().claim_batch(limit, now=now)

    store = BrokenOnce()
    stop = asyncio.Event()
    worker = OutboxWorker(store, FlakyPublisher(), poll_interval=0.01)

    task = asyncio.create_task(worker.run(stop))
    await asyncio.wait_for(third_call.wait(), timeout=1)  # it kept polling after the error
    stop.set()
    await asyncio.wait_for(task, timeout=1)

    assert BrokenOnce.calls >= 3


async def test_the_service_enqueues_events_in_a_unit_of_work() -> None:
    store = InMemoryOutboxStore()
    service = OutboxService(store, clock=Clock())
    event = OrderPlaced(customer_id="c", total=1, aggregate_type="Order", aggregate_id="o")
    uow = InMemoryUnitOfWork()

    [message] = await service.enqueue_events([event], uow=uow)
    assert len(store) == 0  # staged, not written
    await uow.commit()

    stored = await store.get(event.event_id)
    assert stored is not None
    assert stored.created_at == T0
    assert message.message_id == event.event_id


def test_worker_config_is_validated() -> None:
    store = InMemoryOutboxStore()
    with pytest.raises(ValueError, match="batch_size"):
        OutboxWorker(store, FlakyPublisher(), batch_size=0)
    with pytest.raises(ValueError, match="poll_interval"):
        OutboxWorker(store, FlakyPublisher(), poll_interval=-1)
    with pytest.raises(TypeError, match="publisher"):
        OutboxWorker(store, object())  # type: ignore[arg-type]
    assert "batch_size=100" in repr(OutboxWorker(store, FlakyPublisher()))


class Recorder:
    def __init__(self) -> None:
        self.sent: list[OutboxMessage] = []

    async def publish(self, message: OutboxMessage) -> None:
        self.sent.append(message)


async def test_the_worker_publishes_at_the_current_schema_version_and_keeps_the_row() -> None:
    store = InMemoryOutboxStore()
    old, newer = (
        message_from_event(OrderPlaced(customer_id="c", total=0, aggregate_id=o), created_at=T0)
        for o in ("o-1", "o-2")
    )
    newer.schema_version = 9  # written by code newer than this worker's: no path
    uow = InMemoryUnitOfWork()
    await store.enqueue([old, newer], uow=uow)
    await uow.commit()
    one = old.message_id
    registry = UpcasterRegistry()
    registry.register(
        "OrderPlaced",
        1,
        lambda p: {"customer_id": p["customer_id"], "total_cents": p["total"] * 100},
    )
    publisher, clock = Recorder(), Clock()
    worker = OutboxWorker(store, publisher, clock=clock, upcaster=registry.upcast_message)

    result = await worker.run_once()

    assert (result.published, result.failed) == ([one], [newer.message_id])
    (sent,) = publisher.sent
    assert (sent.schema_version, sent.payload) == (2, {"customer_id": "c", "total_cents": 0})
    stored = await store.get(one)
    assert stored is not None
    assert (stored.schema_version, stored.payload) == (1, {"customer_id": "c", "total": 0})
    failed = await store.get(newer.message_id)
    assert failed is not None
    assert failed.status is OutboxStatus.FAILED
    assert (failed.last_error or "").startswith("EventSchemaVersionError: ")
