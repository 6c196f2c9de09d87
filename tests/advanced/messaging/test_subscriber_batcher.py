"""The subscriber's shared transactions: when a batch starts beside one under way."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from cqrs_ddd_advanced_core.adapters.rabbitmq.batcher import Batcher
from cqrs_ddd_advanced_core.messaging import IncomingMessage, Outcome

pytestmark = pytest.mark.timeout(30)


def message(name: str) -> IncomingMessage:
    return IncomingMessage(message_id=name, message_type="Happened", payload={})


class Processor:
    """Records each batch; a batch waits until the test releases it."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.started = asyncio.Event()
        self.release: dict[int, asyncio.Event] = {}

    async def process_batch(
        self, messages: Sequence[IncomingMessage]
    ) -> list[Outcome | Exception | None]:
        index = len(self.batches)
        self.batches.append([m.message_id for m in messages])
        self.release.setdefault(index, asyncio.Event())
        self.started.set()
        await self.release[index].wait()
        return [Outcome.HANDLED] * len(messages)

    async def batch_started(self, count: int) -> None:
        async with asyncio.timeout(5):
            while len(self.batches) < count:
                self.started.clear()
                await self.started.wait()


async def _workers(batcher: Batcher, count: int) -> list[asyncio.Task[None]]:
    tasks = [asyncio.create_task(batcher.work()) for _ in range(count)]
    await asyncio.sleep(0)
    return tasks


async def test_a_lone_submission_starts_a_batch_at_once() -> None:
    processor = Processor()
    batcher = Batcher(processor, size=64, timeout=10, linger=60)
    workers = await _workers(batcher, 4)
    try:
        first = asyncio.create_task(batcher.process([message("a")]))
        await processor.batch_started(1)
        processor.release[0].set()
        assert await first == [Outcome.HANDLED]
    finally:
        for worker in workers:
            worker.cancel()


async def test_what_arrives_during_a_batch_waits_for_it_and_goes_in_one_batch() -> None:
    processor = Processor()
    batcher = Batcher(processor, size=64, timeout=10, linger=0.3)
    workers = await _workers(batcher, 4)
    try:
        first = asyncio.create_task(batcher.process([message("a")]))
        await processor.batch_started(1)
        later = [asyncio.create_task(batcher.process([message(n)])) for n in ("b", "c", "d")]
        await asyncio.sleep(0.05)
        assert processor.batches == [["a"]]  # free workers, but a batch is under way
        processor.release[0].set()
        await processor.batch_started(2)
        assert processor.batches[1] == ["b", "c", "d"]
        processor.release[1].set()
        await asyncio.gather(first, *later)
    finally:
        for worker in workers:
            worker.cancel()


async def test_a_batch_starts_beside_a_slow_one_once_the_linger_is_over() -> None:
    processor = Processor()
    batcher = Batcher(processor, size=64, timeout=10, linger=0.1)
    workers = await _workers(batcher, 2)
    try:
        slow = asyncio.create_task(batcher.process([message("slow")]))
        await processor.batch_started(1)
        loop = asyncio.get_running_loop()
        submitted = loop.time()
        other = asyncio.create_task(batcher.process([message("other")]))
        await processor.batch_started(2)
        assert 0.09 <= loop.time() - submitted < 2.0
        processor.release[1].set()
        assert await other == [Outcome.HANDLED]
        assert not slow.done()
        processor.release[0].set()
        await slow
    finally:
        for worker in workers:
            worker.cancel()


async def test_a_full_batch_waiting_starts_beside_the_one_under_way_at_once() -> None:
    processor = Processor()
    batcher = Batcher(processor, size=3, timeout=10, linger=60)
    workers = await _workers(batcher, 2)
    try:
        first = asyncio.create_task(batcher.process([message("a")]))
        await processor.batch_started(1)
        full = asyncio.create_task(batcher.process([message(n) for n in ("b", "c", "d")]))
        await processor.batch_started(2)
        assert processor.batches[1] == ["b", "c", "d"]
        processor.release[1].set()
        processor.release[0].set()
        await asyncio.gather(first, full)
    finally:
        for worker in workers:
            worker.cancel()


async def test_with_no_linger_a_free_worker_starts_a_batch_at_once() -> None:
    processor = Processor()
    batcher = Batcher(processor, size=64, timeout=10, linger=0)
    workers = await _workers(batcher, 2)
    try:
        first = asyncio.create_task(batcher.process([message("a")]))
        await processor.batch_started(1)
        second = asyncio.create_task(batcher.process([message("b")]))
        await processor.batch_started(2)
        processor.release[0].set()
        processor.release[1].set()
        await asyncio.gather(first, second)
    finally:
        for worker in workers:
            worker.cancel()


async def test_at_a_steady_rate_batches_start_at_most_every_linger_and_take_what_came() -> None:
    processor = Processor()
    batcher = Batcher(processor, size=64, timeout=10, linger=0.2)
    workers = await _workers(batcher, 4)
    loop = asyncio.get_running_loop()
    try:
        processor.release[0] = processor.release[1] = asyncio.Event()
        processor.release[0].set()  # batches end at once: a fast database
        started = loop.time()
        assert await batcher.process([message("a")]) == [Outcome.HANDLED]  # at once
        assert loop.time() - started < 0.1
        later = [asyncio.create_task(batcher.process([message(n)])) for n in ("b", "c")]
        await asyncio.gather(*later)
        assert 0.15 <= loop.time() - started < 2.0  # the next start waited for the spacing
        assert processor.batches == [["a"], ["b", "c"]]
    finally:
        for worker in workers:
            worker.cancel()
