"""Shared transactions for what the partition queues have ready (the subscriber's batches).

Each queue's task submits its ready deliveries and waits for their results;
a worker takes every submission waiting (up to ``size`` deliveries) and
processes them as one batch (``process_batch``: one transaction), in
submission order, each queue's deliveries in their order. Several workers run
at once (the subscriber's ``transactions``), but a batch starts only when
that is worth it:

* ``size`` deliveries wait: at once (a backlog is worked on in parallel);
* the oldest submission has waited ``linger`` seconds: at once (nothing
  waits longer, whatever is under way);
* otherwise when no batch is under way and the last one started at least
  ``linger`` seconds ago. So a lone delivery after a quiet spell goes at
  once, and at a steady rate batches start at most every ``linger`` seconds
  and take what arrived meanwhile.

Without the last rule, at a steady few hundred deliveries a second each
delivery found an idle worker and most transactions held one delivery; a
transaction costs the consumer and the database more than a delivery does
(its ``BEGIN``, inbox statement and ``COMMIT``, a pool checkout, a flush to
the write-ahead log). Waiting at most ``linger`` is the price: a few
milliseconds for the delivery that opens a batch.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cqrs_ddd_advanced_core.messaging.ports import BatchProcessor, IncomingMessage, Outcome

__all__ = ["Batcher"]

Results = list["Outcome | Exception | None"]


class _Submission:
    __slots__ = ("future", "messages", "since")

    def __init__(
        self, messages: list[IncomingMessage], future: asyncio.Future[Results | Exception]
    ) -> None:
        self.messages = messages
        self.future = future
        self.since = future.get_loop().time()


class Batcher:
    """Puts the partition queues' ready deliveries into shared transactions (see the module).

    Args:
        processor: Has ``process_batch`` (a ``MessageConsumer``).
        size: Deliveries per batch (a submission is never split: it may go over).
        timeout: Seconds one batch may take (then it fails as a whole).
        linger: Seconds between two batch starts, and the most a submission
            waits (0: a batch starts whenever a worker is free).
    """

    def __init__(self, processor: BatchProcessor, size: int, timeout: float, linger: float) -> None:
        self._processor = processor
        self._size = size
        self._timeout = timeout
        self._linger = linger
        self._waiting: deque[_Submission] = deque()
        self._count = 0  # deliveries waiting
        self._running = 0  # batches under way
        self._started = -float("inf")  # when the last batch started (loop time)
        self._changed = asyncio.Event()
        self._next = asyncio.Lock()  # the one idle worker that watches for a turn

    async def process(self, messages: list[IncomingMessage]) -> Results:
        """The results of ``messages`` (one queue's, in order) once their batch ended.

        Raises:
            Exception: the batch as a whole failed (or took longer than the timeout).
        """
        future: asyncio.Future[Results | Exception] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Submission(messages, future))
        self._count += len(messages)
        self._changed.set()
        result = await future
        if isinstance(result, Exception):
            raise result
        return result

    async def work(self) -> None:
        """One worker (the subscriber runs ``transactions`` of them)."""
        while True:
            # One idle worker at a time watches (the others wait for the lock, not
            # for every change), takes the batch, and hands the watch on.
            async with self._next:
                await self._turn()
                group: list[_Submission] = []
                count = 0
                while self._waiting and (not group or count < self._size):
                    submission = self._waiting.popleft()
                    if submission.future.done():  # its queue's task was cancelled
                        self._count -= len(submission.messages)
                        continue
                    group.append(submission)
                    count += len(submission.messages)
                self._count -= count
                if group:
                    self._running += 1
                    self._started = asyncio.get_running_loop().time()
            if not group:
                continue
            try:
                await self._run(group)
            finally:
                self._running -= 1
                self._changed.set()

    async def _turn(self) -> None:
        """Until this worker may start a batch (the rules in the module)."""
        loop = asyncio.get_running_loop()
        while True:
            wait: float | None = None
            if self._waiting:
                if self._count >= self._size:
                    return
                now = loop.time()
                oldest = self._waiting[0].since + self._linger
                if now >= oldest:
                    return
                spaced = self._started + self._linger
                if not self._running and now >= spaced:
                    return
                wait = (oldest if self._running else min(oldest, spaced)) - now
            self._changed.clear()
            if wait is None:
                await self._changed.wait()
                continue
            try:
                async with asyncio.timeout(wait):
                    await self._changed.wait()
            except TimeoutError:
                pass

    async def _run(self, group: list[_Submission]) -> None:
        messages = [m for submission in group for m in submission.messages]
        results: Results | Exception
        try:
            async with asyncio.timeout(self._timeout):
                results = await self._processor.process_batch(messages)
        except Exception as exc:
            results = exc
        start = 0
        for submission in group:
            end = start + len(submission.messages)
            if not submission.future.done():  # its queue's task may have been cancelled
                submission.future.set_result(
                    results if isinstance(results, Exception) else results[start:end]
                )
            start = end
