"""One channel's acknowledgements: a multiple ack covers only settled deliveries.

A model of RabbitMQ's side of a channel stands in for the broker here: it
numbers deliveries 1, 2, 3... and fails, as RabbitMQ does, on an ack or reject
of a tag that is not outstanding. It also fails when an ack would cover a
delivery whose effects have not committed (the message would be lost).
The same rules against a real broker: ``test_rabbitmq_acks.py``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cqrs_ddd_advanced_core.adapters.rabbitmq.acks import ChannelAcks

if TYPE_CHECKING:
    from aiormq.abc import AbstractChannel

pytestmark = pytest.mark.timeout(30)


class Broker:
    """The broker's view of one channel: outstanding tags, and the frames received."""

    def __init__(self) -> None:
        self.outstanding: set[int] = set()
        self.committed: set[int] = set()  # the consumer's effects are in (safe to ack)
        self.frames: list[tuple[str, int, bool]] = []  # (method, tag, multiple)
        self.acked: set[int] = set()
        self.rejected: set[int] = set()
        self.requeued: set[int] = set()
        self._next = 1

    def deliver(self) -> int:
        tag, self._next = self._next, self._next + 1
        self.outstanding.add(tag)
        return tag

    def settle(self, method: str, tag: int, multiple: bool) -> None:
        self.frames.append((method, tag, multiple))
        if tag not in self.outstanding:
            raise AssertionError(f"PRECONDITION_FAILED - unknown delivery tag {tag}")
        covered = {t for t in self.outstanding if t <= tag} if multiple else {tag}
        self.outstanding -= covered
        if method == "ack":
            lost = covered - self.committed
            assert not lost, f"ack of {tag} covered deliveries not committed: {sorted(lost)}"
            self.acked |= covered
        elif method == "reject":
            self.rejected |= covered
        else:
            self.requeued |= covered

    # The channel's side (aiormq's channel, for these calls): a frame is handed to
    # the connection, other tasks may run meanwhile.

    async def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
        await asyncio.sleep(0)
        self.settle("ack", delivery_tag, multiple)

    async def basic_reject(self, delivery_tag: int, *, requeue: bool = True) -> None:
        assert not requeue, "a reject goes to the dead-letter exchange, never back"
        await asyncio.sleep(0)
        self.settle("reject", delivery_tag, False)

    async def basic_nack(
        self, delivery_tag: int, multiple: bool = False, requeue: bool = True
    ) -> None:
        assert requeue, "a delivery given back goes back to its queue"
        await asyncio.sleep(0)
        self.settle("nack", delivery_tag, multiple)


def acks_on(broker: Broker, hold: float) -> ChannelAcks:
    return ChannelAcks(cast("AbstractChannel", broker), hold=hold)


def committed(broker: Broker, *tags: int) -> list[int]:
    broker.committed.update(tags)
    return list(tags)


async def test_deliveries_committed_in_tag_order_are_acknowledged_with_one_frame() -> None:
    broker = Broker()
    acks = acks_on(broker, 1.0)
    batch = [broker.deliver() for _ in range(5)]
    await acks.ack(committed(broker, *batch))
    assert broker.frames == [("ack", 5, True)]
    assert broker.outstanding == set()


async def test_the_queues_of_one_batch_acknowledging_in_one_turn_share_one_frame() -> None:
    broker = Broker()
    acks = acks_on(broker, 1.0)
    queues = [[broker.deliver()] for _ in range(4)]  # a batch of four queues' deliveries
    # Their tasks resume in one turn of the loop once the batch committed.
    await asyncio.gather(*(acks.ack(committed(broker, *q)) for q in queues))
    await acks.flush()
    assert broker.frames == [("ack", 4, True)]
    assert broker.acked == {1, 2, 3, 4}


async def test_a_delivery_committed_above_an_outstanding_one_waits_for_it() -> None:
    broker = Broker()
    acks = acks_on(broker, 1.0)
    first, second, third = broker.deliver(), broker.deliver(), broker.deliver()
    await acks.ack(committed(broker, second, third))
    assert broker.frames == []  # 1 is not settled: an ack of 3 with multiple would cover it
    await acks.ack(committed(broker, first))
    assert broker.frames == [("ack", 3, True)]


async def test_a_rejected_delivery_is_rejected_alone_and_the_floor_passes_it() -> None:
    broker = Broker()
    acks = acks_on(broker, 1.0)
    poison, after = broker.deliver(), broker.deliver()
    await acks.ack(committed(broker, after))
    await acks.reject(poison)
    assert broker.frames == [("reject", 1, False), ("ack", 2, True)]
    assert broker.rejected == {1}
    assert broker.acked == {2}


async def test_what_waits_longer_than_hold_is_acknowledged_alone() -> None:
    broker = Broker()
    acks = acks_on(broker, 0.05)
    runner = asyncio.create_task(acks.run())
    try:
        stuck, done = broker.deliver(), broker.deliver()  # `stuck` is being retried
        await acks.ack(committed(broker, done))
        async with asyncio.timeout(5):
            while broker.outstanding != {1}:  # noqa: ASYNC110 (the hold is a timer)
                await asyncio.sleep(0.01)
        assert broker.frames == [("ack", 2, False)]
        later = broker.deliver()
        await acks.ack(committed(broker, stuck, later))
        assert broker.frames[1:] == [("ack", 3, True)]  # 2 is not acknowledged twice
    finally:
        runner.cancel()


async def test_a_tag_never_seen_is_never_covered_and_the_ones_above_go_alone() -> None:
    broker = Broker()
    acks = acks_on(broker, 0.02)
    runner = asyncio.create_task(acks.run())
    try:
        unseen = broker.deliver()  # delivered, but the subscriber never got it
        seen = [broker.deliver(), broker.deliver()]
        await acks.ack(committed(broker, *seen))
        async with asyncio.timeout(5):
            while broker.outstanding != {unseen}:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert all(not multiple for _, _, multiple in broker.frames)
    finally:
        runner.cancel()


async def test_flush_acknowledges_everything_committed_that_waits() -> None:
    broker = Broker()
    acks = acks_on(broker, 60.0)
    outstanding, *done = (broker.deliver() for _ in range(4))
    await acks.ack(committed(broker, *done))
    assert broker.frames == []
    await acks.flush()
    assert broker.outstanding == {outstanding}
    assert broker.acked == {2, 3, 4}


async def test_with_hold_zero_each_delivery_is_acknowledged_alone_at_once() -> None:
    broker = Broker()
    acks = acks_on(broker, 0)
    batch = [broker.deliver() for _ in range(3)]
    await acks.ack(committed(broker, *batch[1:]))
    await acks.ack(committed(broker, batch[0]))
    assert broker.frames == [("ack", 2, False), ("ack", 3, False), ("ack", 1, False)]


def test_a_negative_hold_is_refused() -> None:
    with pytest.raises(ValueError, match="hold"):
        acks_on(Broker(), -1)


# Each step settles one delivery, by tag index into the ones not settled yet:
# committed with others of a "batch", rejected, given back; some are never settled.
_steps = st.lists(
    st.tuples(
        st.sampled_from(["commit", "commit", "commit", "reject", "give_back", "wait"]),
        st.integers(min_value=0, max_value=1000),
        st.integers(min_value=1, max_value=4),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(deliveries=st.integers(min_value=1, max_value=30), steps=_steps, flush=st.booleans())
def test_any_order_of_settling_acks_only_committed_deliveries_each_once(
    deliveries: int, steps: list[tuple[str, int, int]], flush: bool
) -> None:
    async def scenario() -> None:
        broker = Broker()
        acks = acks_on(broker, 0.001)
        runner = asyncio.create_task(acks.run())
        try:
            left = [broker.deliver() for _ in range(deliveries)]
            pending: list[asyncio.Task[None]] = []
            for action, pick, count in steps:
                if not left:
                    break
                chosen = [left.pop(pick % len(left)) for _ in range(min(count, len(left)))]
                if action == "commit":  # one queue's committed deliveries, concurrently
                    pending.append(asyncio.create_task(acks.ack(committed(broker, *chosen))))
                elif action == "reject":
                    pending.extend(asyncio.create_task(acks.reject(d)) for d in chosen)
                elif action == "give_back":
                    pending.extend(asyncio.create_task(acks.give_back(d)) for d in chosen)
                else:
                    left.extend(chosen)  # not settled (yet): in a queue, or being retried
                    await asyncio.sleep(0.002)
            await asyncio.gather(*pending)
            if flush:
                await acks.flush()
            else:
                async with asyncio.timeout(5):  # the hold ends: what waits goes alone
                    while broker.committed - broker.acked:  # noqa: ASYNC110
                        await asyncio.sleep(0.001)
            assert broker.acked == broker.committed
            assert not broker.acked & broker.rejected
            assert broker.outstanding == set(left)
        finally:
            runner.cancel()

    asyncio.run(scenario())
