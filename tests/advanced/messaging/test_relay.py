"""The outbox relay on the in-memory outbox: order, retries, dead letters, wake-up, lag."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cqrs_ddd_advanced_core.messaging import OutboxRelay
from cqrs_ddd_advanced_core.outbox import Backoff
from cqrs_ddd_core.adapters.memory import InMemoryOutboxStore, InMemoryUnitOfWork
from cqrs_ddd_core.exceptions import PersistenceError
from cqrs_ddd_core.persistence import OutboxMessage, OutboxStatus
from cqrs_ddd_core.testing import MetricCapture

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class Broker:
    """Records what it accepted; refuses the messages listed in ``refuse``."""

    def __init__(self) -> None:
        self.accepted: list[OutboxMessage] = []
        self.refuse: set[str] = set()
        self.published = asyncio.Event()

    async def publish(self, message: OutboxMessage) -> None:
        await asyncio.sleep(0)
        if message.message_id in self.refuse:
            raise ConnectionError("nack")
        self.accepted.append(message)
        self.published.set()

    @property
    def ids(self) -> list[str]:
        return [m.message_id for m in self.accepted]


async def commit(store: InMemoryOutboxStore, *streams: str) -> list[str]:
    uow = InMemoryUnitOfWork()
    messages = [
        OutboxMessage(
            message_id=f"{stream}-{i}",
            message_type="Happened",
            payload={},
            created_at=T0,
            aggregate_type="Thing",
            aggregate_id=stream,
        )
        for i, stream in enumerate(streams)
    ]
    await store.enqueue(messages, uow=uow)
    await uow.commit()
    return [m.message_id for m in messages]


async def test_one_streams_messages_are_published_in_order_and_marked_published() -> None:
    store, broker = InMemoryOutboxStore(), Broker()
    ids = await commit(store, "a", "b", "a", "a", "b")
    result = await OutboxRelay(store, broker).run_once()
    assert sorted(result.published) == sorted(ids)
    assert [i for i in broker.ids if i.startswith("a")] == ["a-0", "a-2", "a-3"]
    assert [i for i in broker.ids if i.startswith("b")] == ["b-1", "b-4"]
    stored = [await store.get(i) for i in ids]
    assert all(m is not None and m.status is OutboxStatus.PUBLISHED for m in stored)


async def test_a_failure_holds_back_the_rest_of_its_stream_but_not_other_streams() -> None:
    store, broker, clock = InMemoryOutboxStore(), Broker(), Clock()
    await commit(store, "a", "a", "b")
    broker.refuse = {"a-0"}
    relay = OutboxRelay(store, broker, clock=clock, backoff=Backoff(initial=timedelta(seconds=1)))
    result = await relay.run_once()
    assert result.failed == ["a-0"]
    assert broker.ids == ["b-2"]  # a-1 was not published ahead of a-0
    assert (await store.get("a-1")).next_attempt_at is None  # type: ignore[union-attr]
    assert (await relay.run_once()).processed == 0  # a-0 waits for its backoff, a-1 behind it
    broker.refuse.clear()
    clock.now += timedelta(seconds=2)
    await relay.run_once()
    assert broker.ids == ["b-2", "a-0", "a-1"]


async def test_a_message_that_keeps_failing_becomes_a_dead_letter_after_max_attempts() -> None:
    store, broker, clock = InMemoryOutboxStore(), Broker(), Clock()
    metrics = MetricCapture()
    await commit(store, "a")
    broker.refuse = {"a-0"}
    relay = OutboxRelay(
        store, broker, clock=clock, max_attempts=3, meter_provider=metrics.meter_provider
    )
    for _ in range(3):
        await relay.run_once()
        clock.now += timedelta(minutes=10)
    (dead,) = await store.dead_letters()
    assert dead.message_id == "a-0"
    assert dead.attempts == 3
    assert dead.last_error == "ConnectionError: nack"
    assert metrics.value("cqrs.outbox.dead_lettered") == 1
    assert (await relay.run_once()).processed == 0  # never retried on its own
    broker.refuse.clear()
    assert await store.requeue(["a-0"]) == 1
    await relay.run_once()
    assert broker.ids == ["a-0"]


async def test_the_upcaster_sees_every_message_before_it_is_published() -> None:
    store, broker = InMemoryOutboxStore(), Broker()
    await commit(store, "a")

    def upcast(message: OutboxMessage) -> OutboxMessage:
        return dataclasses.replace(message, payload={"upcast": True})

    await OutboxRelay(store, broker, upcaster=upcast).run_once()
    assert broker.accepted[0].payload == {"upcast": True}


async def test_the_relay_wakes_on_a_commit_in_its_process_without_polling() -> None:
    store, broker = InMemoryOutboxStore(), Broker()
    relay = OutboxRelay(store, broker, poll_interval=3600)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        async with asyncio.timeout(10):
            while relay.lag is None:  # noqa: ASYNC110 (the first, empty batch ran)
                await asyncio.sleep(0.01)
            await commit(store, "a")
            await broker.published.wait()
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await task
    assert broker.ids == ["a-0"]


async def test_the_lag_is_the_age_of_the_oldest_unpublished_message() -> None:
    store, broker, clock = InMemoryOutboxStore(), Broker(), Clock()
    metrics = MetricCapture()
    await commit(store, "a")
    broker.refuse = {"a-0"}
    clock.now = T0 + timedelta(seconds=42)
    relay = OutboxRelay(store, broker, clock=clock, meter_provider=metrics.meter_provider)
    await relay.run_once()
    assert relay.lag == 42.0
    assert metrics.value("cqrs.outbox.lag") == 42.0


@pytest.mark.parametrize(
    ("option", "value"),
    [("batch_size", 0), ("max_attempts", 0), ("poll_interval", 0), ("publish_deadline", -1)],
)
def test_bad_settings_are_refused(option: str, value: float) -> None:
    with pytest.raises(ValueError, match=option):
        OutboxRelay(InMemoryOutboxStore(), Broker(), **{option: value})  # type: ignore[arg-type]


def test_a_publisher_without_publish_is_refused() -> None:
    with pytest.raises(TypeError, match="publish"):
        OutboxRelay(InMemoryOutboxStore(), object())  # type: ignore[arg-type]


class FlakyStore(InMemoryOutboxStore):
    """An outbox whose first claims fail, as a database that went away for a moment."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def claim_batch(self, limit: int = 100, *, now: datetime | None = None) -> Any:
        if self.failures > 0:
            self.failures -= 1
            raise PersistenceError("Outbox claim failed: connection refused")
        return await super().claim_batch(limit, now=now)


async def test_the_relay_outlives_a_failing_outbox_and_publishes_once_it_is_back() -> None:
    store, broker = FlakyStore(failures=2), Broker()
    await commit(store, "a")
    relay = OutboxRelay(store, broker, poll_interval=0.01)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        async with asyncio.timeout(10):
            await broker.published.wait()
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await task
    assert store.failures == 0
    assert broker.ids == ["a-0"]


async def test_an_upcast_message_is_not_published_with_its_stored_json_text() -> None:
    store, broker = InMemoryOutboxStore(), Broker()
    uow = InMemoryUnitOfWork()
    await store.enqueue(
        [OutboxMessage("m", "Happened", {"v": 1}, T0, payload_json='{"v": 1}')], uow=uow
    )
    await uow.commit()

    def upcast(message: OutboxMessage) -> OutboxMessage:
        return dataclasses.replace(message, payload={"v": 2})

    await OutboxRelay(store, broker, upcaster=upcast).run_once()
    assert broker.accepted[0].payload == {"v": 2}
    assert broker.accepted[0].payload_json is None  # serialised again from {"v": 2}


class Gate(Broker):
    """Holds the first publish until ``release`` is set, so the next claim runs meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.holding = asyncio.Event()
        self.release = asyncio.Event()

    async def publish(self, message: OutboxMessage) -> None:
        if not self.accepted and not self.holding.is_set():
            self.holding.set()
            await self.release.wait()
        await super().publish(message)


class CountingClaims(InMemoryOutboxStore):
    def __init__(self) -> None:
        super().__init__()
        self.claims = 0

    async def claim_batch(self, limit: int = 100, *, now: datetime | None = None) -> Any:
        self.claims += 1
        return await super().claim_batch(limit, now=now)


async def test_the_batch_claimed_ahead_keeps_its_streams_order() -> None:
    store, broker = CountingClaims(), Gate()
    await commit(store, "a", "a", "b")
    relay = OutboxRelay(store, broker, batch_size=1, poll_interval=0.01)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        async with asyncio.timeout(10):
            await broker.holding.wait()  # a-0 in flight
            while store.claims < 2:  # noqa: ASYNC110 (the claim ahead ran meanwhile)
                await asyncio.sleep(0.01)
            broker.release.set()
            while len(broker.accepted) < 3:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await task
    assert broker.ids.index("a-0") < broker.ids.index("a-1")
    assert sorted(broker.ids) == ["a-0", "a-1", "b-2"]  # each once


async def test_a_batch_claimed_ahead_is_given_back_when_the_relay_stops() -> None:
    store, broker = CountingClaims(), Gate()
    await commit(store, "a", "b")
    relay = OutboxRelay(store, broker, batch_size=1, poll_interval=3600)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    async with asyncio.timeout(10):
        await broker.holding.wait()  # a-0 in flight
        while store.claims < 2:  # noqa: ASYNC110 (b-1 claimed ahead)
            await asyncio.sleep(0.01)
        stop.set()
        broker.release.set()
        await task
    assert broker.ids == ["a-0"]
    assert [m.message_id for m in await store.claim_batch(10)] == ["b-1"]  # due at once


class AnswerLate(InMemoryOutboxStore):
    """An outbox whose second claim takes its rows, then answers once ``answer`` is set:
    a claim that is one statement, its own transaction, committed on the server while
    its answer is on the way (cancelling the caller then does not undo it)."""

    def __init__(self) -> None:
        super().__init__()
        self.claims = 0
        self.claimed = asyncio.Event()
        self.answer = asyncio.Event()

    async def claim_batch(self, limit: int = 100, *, now: datetime | None = None) -> Any:
        self.claims += 1
        batch = await super().claim_batch(limit, now=now)
        if self.claims == 2:
            self.claimed.set()
            await self.answer.wait()
        return batch


async def test_a_claim_in_flight_when_the_relay_is_cancelled_is_awaited_and_given_back() -> None:
    store, broker = AnswerLate(), Gate()
    await commit(store, "a", "b")
    relay = OutboxRelay(store, broker, batch_size=1, poll_interval=3600)
    task = asyncio.create_task(relay.run(asyncio.Event()))
    async with asyncio.timeout(10):
        await broker.holding.wait()  # a-0 in flight
        await store.claimed.wait()  # b-1 taken by the claim ahead, its answer not yet in
        task.cancel()
        await asyncio.sleep(0.05)  # the relay is stopping, the claim still in flight
        store.answer.set()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert broker.ids == []  # a-0's publish was cancelled
    # b-1 is due at once (given back), not hidden until the claim timeout.
    assert "b-1" in [m.message_id for m in await store.claim_batch(10)]


class MarkingClaims(InMemoryOutboxStore):
    """An outbox that marks and claims in one call, as the SQL one does; counts both ways."""

    def __init__(self) -> None:
        super().__init__()
        self.marked_with_claims: list[str] = []
        self.marked_alone: list[str] = []

    async def mark_published_and_claim(
        self,
        published: Any,
        limit: int = 100,
        *,
        at: datetime | None = None,
        now: datetime | None = None,
    ) -> Any:
        self.marked_with_claims.extend(published)
        await super().mark_published(published, at=at)
        return await super().claim_batch(limit, now=now)

    async def mark_published(self, message_ids: Any, *, at: datetime | None = None) -> None:
        self.marked_alone.extend(message_ids)
        await super().mark_published(message_ids, at=at)


async def test_a_batch_is_marked_published_by_the_next_claim() -> None:
    store, broker = MarkingClaims(), Broker()
    sent = await commit(store, "a", "a", "b", "a")
    relay = OutboxRelay(store, broker, batch_size=1, poll_interval=3600)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        async with asyncio.timeout(10):
            while len(store.marked_with_claims) < len(sent):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await task
    assert sorted(broker.ids) == sorted(sent)  # each once
    assert [i for i in broker.ids if i.startswith("a")] == ["a-0", "a-1", "a-3"]  # in order
    assert sorted(store.marked_with_claims) == sorted(sent)
    assert store.marked_alone == []  # no commit of its own for a batch
    stored = [await store.get(message_id) for message_id in sent]
    assert all(m is not None and m.status is OutboxStatus.PUBLISHED for m in stored)


async def test_what_was_confirmed_is_marked_when_the_relay_stops() -> None:
    store, broker = MarkingClaims(), Gate()
    await commit(store, "a", "b")
    relay = OutboxRelay(store, broker, batch_size=1, poll_interval=3600)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    async with asyncio.timeout(10):
        await broker.holding.wait()  # a-0 in flight, b-1 claimed ahead
        stop.set()
        broker.release.set()
        await task
    assert broker.ids == ["a-0"]
    assert store.marked_alone == ["a-0"]  # no next claim to carry it: marked on the way out
    published = await store.get("a-0")
    assert published is not None
    assert published.status is OutboxStatus.PUBLISHED


async def test_a_batch_is_marked_by_the_claim_of_the_next_commit_within_mark_delay() -> None:
    store, broker = MarkingClaims(), Broker()
    claims = 0
    claim_batch, mark_and_claim = store.claim_batch, store.mark_published_and_claim

    async def counting_claim(*args: Any, **kwargs: Any) -> Any:
        nonlocal claims
        claims += 1
        return await claim_batch(*args, **kwargs)

    async def counting_mark_and_claim(*args: Any, **kwargs: Any) -> Any:
        nonlocal claims
        claims += 1
        return await mark_and_claim(*args, **kwargs)

    store.claim_batch = counting_claim  # type: ignore[method-assign]
    store.mark_published_and_claim = counting_mark_and_claim  # type: ignore[method-assign]
    relay = OutboxRelay(store, broker, poll_interval=3600, mark_delay=3600)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        async with asyncio.timeout(10):
            while claims < 1:  # noqa: ASYNC110 (the first look at the outbox)
                await asyncio.sleep(0.01)
            await commit(store, "a")
            while len(broker.accepted) < 1:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)  # no look of its own to mark a-0: it waits
            assert claims == 2
            assert store.marked_with_claims == []
            await commit(store, "b")  # wakes the relay: one claim marks a-0, takes b-0
            while len(broker.accepted) < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            assert claims == 3
            assert store.marked_with_claims == ["a-0"]
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await task
    assert store.marked_alone == ["b-0"]  # marked on the way out


async def test_an_idle_relay_marks_its_last_batch_after_mark_delay() -> None:
    store, broker = MarkingClaims(), Broker()
    relay = OutboxRelay(store, broker, poll_interval=3600, mark_delay=0.05)
    await commit(store, "a")
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        async with asyncio.timeout(10):
            while store.marked_with_claims != ["a-0"]:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await task
    assert store.marked_alone == []


def test_a_negative_mark_delay_is_refused() -> None:
    with pytest.raises(ValueError, match="mark_delay"):
        OutboxRelay(InMemoryOutboxStore(), Broker(), mark_delay=-1)


class Hang(Broker):
    """Never confirms the messages listed in ``hang``; counts the publishes cancelled."""

    def __init__(self, *hang: str) -> None:
        super().__init__()
        self.hang = set(hang)
        self.hanging = asyncio.Event()
        self.cancelled: list[str] = []

    async def publish(self, message: OutboxMessage) -> None:
        if message.message_id in self.hang:
            self.hanging.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled.append(message.message_id)
                raise
        await super().publish(message)


async def test_past_the_publish_deadline_the_publish_in_flight_fails_and_its_stream_waits() -> None:
    """The batch's deadline cuts a stream's publish in flight: that message's attempt
    failed (retried after the backoff), the rest of its stream is given back, the
    other streams are published, and the relay goes on."""
    store, broker, clock = InMemoryOutboxStore(), Hang("a-0"), Clock()
    await commit(store, "a", "a", "b", "c")
    relay = OutboxRelay(store, broker, clock=clock, publish_deadline=0.2)
    async with asyncio.timeout(5):
        result = await relay.run_once()
    assert result.failed == ["a-0"]
    assert sorted(result.published) == ["b-2", "c-3"]
    assert broker.cancelled == ["a-0"]
    failed = await store.get("a-0")
    assert failed is not None
    assert failed.status is OutboxStatus.FAILED
    assert failed.attempts == 1
    assert (failed.last_error or "").startswith("TimeoutError")
    behind = await store.get("a-1")
    assert behind is not None
    assert behind.status is OutboxStatus.PENDING
    assert behind.next_attempt_at is None  # given back: due again behind a-0
    assert "a-1" not in broker.ids


async def test_a_relay_cancelled_mid_batch_cancels_every_stream_s_publish() -> None:
    """Cancelling the relay cancels the publishes in flight of all the batch's streams,
    none left running on its own."""
    store, broker = InMemoryOutboxStore(), Hang("a-0", "b-1", "c-2")
    await commit(store, "a", "b", "c")
    task = asyncio.create_task(OutboxRelay(store, broker, publish_deadline=60).run_once())
    async with asyncio.timeout(5):
        await broker.hanging.wait()
        await asyncio.sleep(0.05)  # every stream in flight
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)
    assert sorted(broker.cancelled) == ["a-0", "b-1", "c-2"]
