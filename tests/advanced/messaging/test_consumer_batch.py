"""A consumer's batches (``process_batch``) on the in-memory inbox: one commit for the
batch, a failure leaves the deliveries before it committed once and nothing after it."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from cqrs_ddd_advanced_core.messaging import IncomingMessage, MessageConsumer, Outcome
from cqrs_ddd_core.adapters.memory import InMemoryInboxStore
from cqrs_ddd_core.adapters.memory.inbox import InMemoryInboxTransaction
from cqrs_ddd_core.exceptions import PersistenceError
from cqrs_ddd_core.persistence import InboxTransaction
from cqrs_ddd_core.testing import SpanCapture


def message(message_id: str, message_type: str = "OrderPlaced") -> IncomingMessage:
    return IncomingMessage(message_id=message_id, message_type=message_type, payload={})


class Effects:
    def __init__(self, fail: set[str] | None = None) -> None:
        self.fail = fail or set()
        self.ran: list[str] = []  # every run of the handler, rolled back ones included
        self.applied: list[str] = []  # committed
        self.transactions: list[int] = []

    async def handle(self, incoming: IncomingMessage, tx: InboxTransaction) -> None:
        self.ran.append(incoming.message_id)
        self.transactions.append(id(tx))
        if incoming.message_id in self.fail:
            raise RuntimeError(f"refuses {incoming.message_id}")
        tx.after_commit(lambda: self.applied.append(incoming.message_id))


def consumer(
    fail: set[str] | None = None, inbox: Any = None, **options: Any
) -> tuple[MessageConsumer, Effects, Any]:
    inbox = inbox or InMemoryInboxStore()
    effects = Effects(fail)
    built = MessageConsumer("billing", inbox, **options)
    built.subscribe("OrderPlaced", effects.handle)
    return built, effects, inbox


async def test_a_batch_runs_in_order_in_one_transaction_and_commits_once() -> None:
    built, effects, inbox = consumer()
    results = await built.process_batch([message("m1"), message("m2"), message("m3")])
    assert results == [Outcome.HANDLED] * 3
    assert effects.applied == ["m1", "m2", "m3"]
    assert len(set(effects.transactions)) == 1
    for m in ("m1", "m2", "m3"):
        assert await inbox.has_handled("billing", m)


async def test_a_failure_mid_batch_commits_the_ones_before_once_and_leaves_the_rest() -> None:
    built, effects, inbox = consumer(fail={"m3"})
    batch = [message("m1"), message("m2"), message("m3"), message("m4")]
    results = await built.process_batch(batch)
    assert results[:2] == [Outcome.HANDLED, Outcome.HANDLED]
    assert isinstance(results[2], RuntimeError)
    assert results[3] is None  # not tried: after the failed one
    # m1 and m2 ran in the rolled-back transaction, then again in the one that committed.
    assert effects.ran == ["m1", "m2", "m3", "m1", "m2"]
    assert effects.applied == ["m1", "m2"]
    assert not await inbox.has_handled("billing", "m3")
    assert not await inbox.has_handled("billing", "m4")
    # The caller retries m3 alone, then the rest.
    effects.fail.clear()
    assert await built.process_batch([message("m3"), message("m4")]) == [Outcome.HANDLED] * 2
    assert effects.applied == ["m1", "m2", "m3", "m4"]


async def test_a_failure_of_the_first_delivery_commits_nothing() -> None:
    built, effects, _ = consumer(fail={"m1"})
    results = await built.process_batch([message("m1"), message("m2")])
    assert isinstance(results[0], RuntimeError)
    assert results[1] is None
    assert effects.applied == []
    assert effects.ran == ["m1"]


async def test_redeliveries_and_copies_in_one_batch_are_duplicates_and_others_ignored() -> None:
    built, effects, inbox = consumer()
    assert await built.process(message("m1")) is Outcome.HANDLED
    results = await built.process_batch(
        [message("m1"), message("m2"), message("m2"), message("x", "Other"), message("m3")]
    )
    assert results == [
        Outcome.DUPLICATE,
        Outcome.HANDLED,
        Outcome.DUPLICATE,
        Outcome.IGNORED,
        Outcome.HANDLED,
    ]
    assert effects.applied == ["m1", "m2", "m3"]
    assert not await inbox.has_handled("billing", "x")


class FailingCommitInbox(InMemoryInboxStore):
    async def begin(self) -> InMemoryInboxTransaction:
        store = self

        class Failing(InMemoryInboxTransaction):
            async def commit(self) -> None:
                raise PersistenceError("commit refused")

        return Failing(store)


async def test_a_failed_commit_fails_every_delivery_of_the_batch() -> None:
    built, effects, inbox = consumer(inbox=FailingCommitInbox())
    results = await built.process_batch([message("m1"), message("m2")])
    assert all(isinstance(r, PersistenceError) for r in results)
    assert effects.applied == []
    assert not await inbox.has_handled("billing", "m1")


async def test_each_delivery_of_a_batch_has_its_span_ended_after_the_commit() -> None:
    spans = SpanCapture()
    built, _, _ = consumer(fail={"m2"}, tracer_provider=spans.tracer_provider)
    await built.process_batch([message("m1"), message("m2"), message("m3")])
    consumers = [s for s in spans.spans if s.name.startswith("process")]
    # m1 (committed), m2 (failed); m3 not tried: no span.
    assert sorted(s.attributes["messaging.message.id"] for s in consumers) == ["m1", "m2"]
    by_id = {s.attributes["messaging.message.id"]: s for s in consumers}
    assert by_id["m1"].attributes["cqrs.outcome"] == "handled"
    assert by_id["m2"].status.status_code.name == "ERROR"
    spans.shutdown()


async def test_a_batch_cancelled_as_a_handler_finishes_commits_nothing_and_fails_no_pipeline() -> (
    None
):
    # Cancelling the batch (its connection lost) cancels the future it waits on for the
    # running delivery; the handler finishing right then used to fail its pipeline
    # with InvalidStateError (logged as a processing failure, and by asyncio as a
    # task exception never retrieved).
    inbox = InMemoryInboxStore()
    built = MessageConsumer("billing", inbox)
    applied: list[str] = []
    batch_task: asyncio.Task[Any] | None = None

    async def handle(incoming: IncomingMessage, tx: InboxTransaction) -> None:
        assert batch_task is not None
        batch_task.cancel()  # while this handler is still running
        tx.after_commit(lambda: applied.append(incoming.message_id))

    built.subscribe("OrderPlaced", handle)
    unretrieved: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: unretrieved.append(context))
    try:
        batch_task = asyncio.create_task(built.process_batch([message("m1"), message("m2")]))
        with pytest.raises(asyncio.CancelledError):
            await batch_task
        for _ in range(3):
            await asyncio.sleep(0)
        gc.collect()
    finally:
        loop.set_exception_handler(None)
    assert applied == []
    assert not await inbox.has_handled("billing", "m1")
    assert [
        c for c in unretrieved if isinstance(c.get("exception"), asyncio.InvalidStateError)
    ] == []
    assert unretrieved == []
