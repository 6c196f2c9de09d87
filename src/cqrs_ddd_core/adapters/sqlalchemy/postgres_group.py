"""PostgreSQL group commit: concurrent commits share one statement.

Each commit is one statement (:mod:`.postgres`), and with many senders most
of a command's cost is per statement: the client's encoding and pool
checkout, the round trip, the server's parse, plan and transaction. So a
unit of work does not send its flush alone while others are on their way:

* A commit joins a queue. If fewer than ``in_flight`` statements are running,
  a drain task starts at once, so a lone sender waits for nobody.
* A drain task takes the queued flushes, in order, up to ``batch`` of them
  and stopping before one that touches a stream or state row already in the
  batch, merges them into one plan and sends one statement; it goes on
  until the queue is empty. While a statement is out, new commits gather.
* Success: every flush of the batch committed, in the same transaction.
* PostgreSQL refused the statement (a version conflict, a duplicate id...):
  nothing of it was written, so each flush of the batch is sent again on its
  own and gets its own outcome. One command's conflict never fails another.
* The connection failed: the outcome is unknown for the whole batch, and
  each of its commits says so (``PersistenceError``), as a lone one would.

Cancellation: a commit cancelled while still queued leaves the queue and
nothing of it is written; one cancelled after its batch was sent waits for
the outcome, which it reports (committed: the cancellation reaches the
caller at its next ``await``; failed: the cancellation is raised).

Configured per engine with the execution options ``postgres_commit_batch``
(flushes per statement; 1 turns grouping off) and
``postgres_commits_in_flight`` (statements at once); ``create_engine`` sets
them.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

from cqrs_ddd_core.adapters.sqlalchemy.errors import persistence_error
from cqrs_ddd_core.adapters.sqlalchemy.plan import FlushPlan
from cqrs_ddd_core.adapters.sqlalchemy.postgres import StatementFailed, run_flush, step_timings
from cqrs_ddd_core.exceptions import ConfigurationError, PersistenceError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

    from cqrs_ddd_core.persistence.records import StepTiming

__all__ = [
    "BATCH_OPTION",
    "DEFAULT_BATCH",
    "DEFAULT_IN_FLIGHT",
    "IN_FLIGHT_OPTION",
    "GroupCommitter",
    "committer_for",
    "describe",
]

BATCH_OPTION = "postgres_commit_batch"
IN_FLIGHT_OPTION = "postgres_commits_in_flight"
DEFAULT_BATCH = 32
DEFAULT_IN_FLIGHT = 4


class _Outcome:
    __slots__ = ("error", "timings")

    def __init__(self, timings: list[StepTiming], error: BaseException | None) -> None:
        self.timings, self.error = timings, error


class _Pending:
    """One unit of work's flush, waiting for its statement."""

    __slots__ = ("outcome", "plan", "sent", "waiter")

    def __init__(self, plan: FlushPlan, waiter: asyncio.Future[None]) -> None:
        self.plan = plan
        self.waiter = waiter
        self.sent = False
        self.outcome: _Outcome | None = None

    def finish(self, timings: list[StepTiming], error: BaseException | None) -> None:
        self.outcome = _Outcome(timings, error)
        if not self.waiter.done():
            self.waiter.set_result(None)


class GroupCommitter:
    """The commit queue of one engine (see the module's description)."""

    __slots__ = ("__weakref__", "_batch", "_drains", "_in_flight", "_limit", "_loop", "_queue")

    def __init__(self, batch: int = DEFAULT_BATCH, in_flight: int = DEFAULT_IN_FLIGHT) -> None:
        for name, value in ((BATCH_OPTION, batch), (IN_FLIGHT_OPTION, in_flight)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigurationError(f"{name} must be a positive integer, got {value!r}")
        self._batch = batch
        self._limit = in_flight
        self._queue: deque[_Pending] = deque()
        self._in_flight = 0
        self._drains: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def batch(self) -> int:
        return self._batch

    @property
    def in_flight(self) -> int:
        return self._limit

    async def commit(self, engine: AsyncEngine, plan: FlushPlan, timings: list[StepTiming]) -> None:
        """Write and commit ``plan``, maybe in one statement with concurrent commits.

        Raises:
            ConcurrencyError: a stream or state row was not at the expected version.
            PersistenceError: any other database failure (nothing of this plan
                was written), or a lost connection (the outcome is unknown).
        """
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (tests run one per test)
            self._loop, self._queue, self._in_flight = loop, deque(), 0
        entry = _Pending(plan, loop.create_future())
        self._queue.append(entry)
        if self._in_flight < self._limit:
            self._in_flight += 1
            task = loop.create_task(self._drain(engine))
            self._drains.add(task)
            task.add_done_callback(self._drains.discard)
        try:
            await entry.waiter
        except asyncio.CancelledError as exc:
            await self._cancelled(entry, timings, exc)
            return
        outcome = entry.outcome
        assert outcome is not None
        timings.extend(outcome.timings)
        if outcome.error is not None:
            raise outcome.error

    async def _cancelled(
        self, entry: _Pending, timings: list[StepTiming], cancelled: asyncio.CancelledError
    ) -> None:
        if not entry.sent:
            self._queue.remove(entry)  # never sent: nothing was written
            raise cancelled
        while entry.outcome is None:  # sent: wait for what the database did
            entry.waiter = asyncio.get_running_loop().create_future()
            try:
                await entry.waiter
            except asyncio.CancelledError:
                continue
        timings.extend(entry.outcome.timings)
        if entry.outcome.error is not None:
            raise cancelled from None  # nothing was kept: report the cancellation
        current = asyncio.current_task()
        if current is not None:  # committed: deliver the cancellation at the next await
            current.uncancel()
            current.cancel()

    def _take(self) -> list[_Pending]:
        """The next batch: queued flushes in order, none sharing a stream or state row
        (a flush that would goes in a later statement; with several statements in
        flight, two commits on one stream may still race, as without grouping, and
        the versions decide)."""
        queue, batch = self._queue, [self._queue.popleft()]
        streams = set(batch[0].plan.streams)
        states = set(batch[0].plan.states)
        while queue and len(batch) < self._batch:
            plan = queue[0].plan
            if not streams.isdisjoint(plan.streams) or not states.isdisjoint(plan.states):
                break  # it goes in a later statement
            streams.update(plan.streams)
            states.update(plan.states)
            batch.append(queue.popleft())
        for entry in batch:
            entry.sent = True
        return batch

    async def _drain(self, engine: AsyncEngine) -> None:
        try:
            while self._queue:
                await self._send(engine, self._take())
        finally:
            # Left only on the way out of a cancellation (the loop is closing):
            # their callers are being cancelled too, and nothing of them was sent.
            while self._queue:
                entry = self._queue.popleft()
                error = PersistenceError("PostgreSQL commit not sent: the event loop is closing")
                entry.finish([], error)
            self._in_flight -= 1

    async def _send(self, engine: AsyncEngine, batch: list[_Pending]) -> None:
        """Send ``batch`` as one statement and give every entry its outcome, whatever
        happens (only a cancellation of the drain itself propagates)."""
        try:
            await self._send_batch(engine, batch)
        except BaseException as exc:
            what = (
                "PostgreSQL commit failed"  # before the statement was sent (a bug if ever)
                if isinstance(exc, Exception)
                else "PostgreSQL commit interrupted; its outcome is unknown"
            )
            for entry in batch:
                if entry.outcome is None:
                    entry.finish([], persistence_error(exc, what))
            if not isinstance(exc, Exception):
                raise

    async def _send_batch(self, engine: AsyncEngine, batch: list[_Pending]) -> None:
        alone = len(batch) == 1
        plan = batch[0].plan if alone else _merged(batch)
        try:
            start, end = await run_flush(engine, plan, diagnose=alone)
        except StatementFailed as failed:
            if not alone and failed.written_nothing and failed.sent:
                for entry in batch:  # each on its own: its own outcome
                    await self._send(engine, [entry])
                return
            kind = type(failed.error).__name__
            for index, entry in enumerate(batch):
                error = failed.error
                if index:  # one exception object per caller
                    error = persistence_error(failed.error, "PostgreSQL group commit failed")
                entry.finish(step_timings(entry.plan, failed.start, failed.end, kind), error)
            return
        for entry in batch:
            entry.finish(step_timings(entry.plan, start, end, None), None)


def _merged(batch: list[_Pending]) -> FlushPlan:
    """One plan writing every plan of ``batch`` (they share no stream or state row)."""
    merged = FlushPlan()
    for entry in batch:
        plan = entry.plan
        merged.streams.update(plan.streams)
        merged.events.extend(plan.events)
        merged.outbox.extend(plan.outbox)
        merged.audit.extend(plan.audit)
        merged.states.update(plan.states)
    return merged


_committers: weakref.WeakKeyDictionary[Engine, GroupCommitter] = weakref.WeakKeyDictionary()


def committer_for(engine: AsyncEngine) -> GroupCommitter | None:
    """The commit queue of ``engine``, or ``None`` when grouping is off (batch of 1)."""
    sync_engine = engine.sync_engine
    committer = _committers.get(sync_engine)
    if committer is None:
        options = engine.get_execution_options()
        batch = options.get(BATCH_OPTION, DEFAULT_BATCH)
        in_flight = options.get(IN_FLIGHT_OPTION, DEFAULT_IN_FLIGHT)
        committer = _committers[sync_engine] = GroupCommitter(batch, in_flight)
    return None if committer.batch == 1 else committer


def describe(engine: AsyncEngine) -> dict[str, Any]:
    """The engine's group-commit settings (for reports)."""
    committer = committer_for(engine)
    if committer is None:
        return {BATCH_OPTION: 1}
    return {BATCH_OPTION: committer.batch, IN_FLIGHT_OPTION: committer.in_flight}
