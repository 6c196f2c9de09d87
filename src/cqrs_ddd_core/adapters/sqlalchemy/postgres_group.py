"""PostgreSQL group commit: concurrent commits share one statement.

Each commit is one statement (:mod:`.postgres`), and with many senders most
of a command's cost is per statement: the client's encoding and pool
checkout, the round trip, the server's parse, plan and transaction. So a
unit of work does not send its flush alone while others are on their way:

* A commit joins a queue. If fewer than ``in_flight`` drain tasks run and
  none of them is waiting to take a batch, one starts at once, so a lone
  sender waits for nobody (a drain waiting for its turn takes this commit
  too: starting another would only make a task with nothing to send).
* A drain task takes the queued flushes, in order, up to ``batch`` of them
  and stopping before one that touches a stream or state row already in the
  batch, merges them into one plan and sends one statement; it goes on
  until the queue is empty. While a statement is out, new commits gather.
* A batch is taken from the queue only once its drain holds a connection:
  a commit counts as sent from then on.
* Success: every flush of the batch committed, in the same transaction.
* PostgreSQL refused the statement (a version conflict, an event id stored
  already...): nothing of it was written, so each flush of the batch is sent
  again on its own and gets its own outcome. One command's conflict never
  fails another.
* The connection was lost: the batch's outcome is looked up once, for all
  of it (the statement is atomic). Committed: every commit of the batch is.
  Unknown: each says so (:class:`CommitOutcomeUnknownError` with its own
  event ids); never sent again. Not written (the old server process is gone
  and none of the ids is stored): each flush is sent again on its own.
* No connection could be had: every queued commit fails with that error.

The queue holds at most ``postgres_commit_queue`` commits; one more waits
for room, within the engine's commit timeout (then ``PersistenceError``,
nothing sent).

Cancellation (a caller's deadline included): a commit cancelled while still
queued leaves the queue and nothing of it is written. One cancelled after its
batch was sent waits at most :data:`.postgres_cancel.CANCEL_GRACE` seconds for the outcome
and reports it (committed: the cancellation reaches the caller at its next
``await``; refused: the cancellation is raised); without an outcome by then
it raises :class:`CommitOutcomeUnknownError` (the statement goes on within
the engine's limits, and the retried command is recognised by its event ids).

**Linger (off by default).** With ``postgres_commit_linger`` set to ``L``
seconds, a commit made less than ``L`` after the previous one does not go at
once: the drain that takes it waits until it has been queued ``L`` (not at
all if a full batch is queued when the drain looks; a batch that fills while
it waits still waits out ``L``), and takes every commit queued meanwhile. A commit after a
quiet spell of ``L`` or more goes at once as without linger, so a sender at a
low rate waits for nobody; at a high rate fewer, larger statements carry the
same commits (less CPU per commit, client and server), each commit waiting at
most ``L`` longer.

Configured per engine with the execution options ``postgres_commit_batch``
(flushes per statement; 1 turns grouping off:
:func:`.postgres_cancel.commit_alone`),
``postgres_commits_in_flight`` (statements at once), ``postgres_commit_linger``
and the limits of :mod:`.postgres_settings`; ``create_engine`` sets them.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

from cqrs_ddd_core.adapters.sqlalchemy.errors import persistence_error
from cqrs_ddd_core.adapters.sqlalchemy.plan import FlushPlan
from cqrs_ddd_core.adapters.sqlalchemy.postgres import (
    Attempt,
    StatementFailed,
    run_flush,
    step_timings,
    unknown_outcome,
)
from cqrs_ddd_core.adapters.sqlalchemy.postgres_cancel import CANCEL_GRACE, deliver
from cqrs_ddd_core.adapters.sqlalchemy.postgres_pending import (
    QueuedCommit,
    committed,
    copy_error,
    fail,
    merged,
)
from cqrs_ddd_core.adapters.sqlalchemy.postgres_settings import (
    DEFAULT_COMMIT_QUEUE,
    settings_of,
)
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
    "LINGER_OPTION",
    "GroupCommitter",
    "committer_for",
    "describe",
]

BATCH_OPTION = "postgres_commit_batch"
IN_FLIGHT_OPTION = "postgres_commits_in_flight"
DEFAULT_BATCH = 32
DEFAULT_IN_FLIGHT = 4
LINGER_OPTION = "postgres_commit_linger"


class GroupCommitter:
    """The commit queue of one engine (see the module's description)."""

    __slots__ = (
        "__weakref__",
        "_batch",
        "_drains",
        "_in_flight",
        "_last",
        "_limit",
        "_linger",
        "_loop",
        "_queue",
        "_queue_limit",
        "_room",
        "_sending",
    )

    def __init__(
        self,
        batch: int = DEFAULT_BATCH,
        in_flight: int = DEFAULT_IN_FLIGHT,
        queue_limit: int = DEFAULT_COMMIT_QUEUE,
        linger: float = 0.0,
    ) -> None:
        if isinstance(linger, bool) or not isinstance(linger, (int, float)) or not 0 <= linger <= 1:
            raise ConfigurationError(
                f"{LINGER_OPTION} must be a number of seconds from 0 to 1, got {linger!r}"
            )
        for name, value in (
            (BATCH_OPTION, batch),
            (IN_FLIGHT_OPTION, in_flight),
            ("postgres_commit_queue", queue_limit),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigurationError(f"{name} must be a positive integer, got {value!r}")
        self._batch = batch
        self._limit = in_flight
        self._queue_limit = queue_limit
        self._queue: deque[QueuedCommit] = deque()
        self._in_flight = 0  # drain tasks
        self._sending = 0  # statements taken from the queue and not yet answered
        self._drains: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._room: asyncio.Semaphore | None = None
        self._linger = float(linger)
        self._last = -math.inf  # when the last commit was queued (the loop's clock)

    @property
    def batch(self) -> int:
        return self._batch

    @property
    def in_flight(self) -> int:
        return self._limit

    @property
    def linger(self) -> float:
        """Seconds a commit made soon after another may wait for more (0: none)."""
        return self._linger

    @property
    def queue_limit(self) -> int:
        """How many commits may wait for the database at once; one more is refused."""
        return self._queue_limit

    @property
    def queued(self) -> int:
        """Commits waiting in the queue now (not yet on a connection)."""
        return len(self._queue)

    @property
    def sending(self) -> int:
        """Statements taken from the queue and not answered yet."""
        return self._sending

    async def commit(self, engine: AsyncEngine, plan: FlushPlan, timings: list[StepTiming]) -> None:
        """Write and commit ``plan``, maybe in one statement with concurrent commits.

        Raises:
            ConcurrencyError: a stream or state row was not at the expected version.
            CommitOutcomeUnknownError: the connection was lost after the statement
                was sent and the outcome could not be learnt, or the caller was
                cancelled then and the outcome did not come within :data:`CANCEL_GRACE`.
            PersistenceError: any other database failure (nothing of this plan
                was written).
        """
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (tests run one per test)
            self._loop, self._queue, self._in_flight, self._sending = loop, deque(), 0, 0
            self._room = asyncio.Semaphore(self._queue_limit)
            self._last = -math.inf
        room = self._room
        assert room is not None
        if room.locked():  # the queue is full: wait for room, within the commit timeout
            limit = settings_of(engine).commit_timeout
            try:
                async with asyncio.timeout(limit):
                    await room.acquire()
            except TimeoutError:
                raise PersistenceError(
                    f"PostgreSQL commit not sent: the commit queue stayed full "
                    f"({self._queue_limit} waiting) for {limit} s"
                ) from None
        else:
            await room.acquire()  # free: returns at once
        entry = QueuedCommit(plan, loop.create_future())
        if self._linger:
            now = loop.time()
            if now - self._last < self._linger:  # others came just before: wait for more
                entry.ripe = now + self._linger
            self._last = now
        self._queue.append(entry)
        # A drain that has not taken its batch yet takes this commit too: start
        # another only when none is waiting, or the queue outgrows their batches.
        waiting = self._in_flight - self._sending
        if self._in_flight < self._limit and (
            not waiting or len(self._queue) > waiting * self._batch
        ):
            self._spawn(loop, engine)
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
        self, entry: QueuedCommit, timings: list[StepTiming], cancelled: asyncio.CancelledError
    ) -> None:
        if not entry.sent:
            self._queue.remove(entry)  # never sent: nothing was written
            if self._room is not None:
                self._room.release()
            raise cancelled
        if entry.outcome is None:  # sent: wait a little for what the database did
            entry.waiter = asyncio.get_running_loop().create_future()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({entry.waiter}, timeout=CANCEL_GRACE)
        outcome = entry.outcome
        if outcome is None:
            raise unknown_outcome(entry.plan, cancelled) from cancelled
        timings.extend(outcome.timings)
        deliver(outcome.error, cancelled)

    def _spawn(self, loop: asyncio.AbstractEventLoop, engine: AsyncEngine) -> None:
        self._in_flight += 1
        task = loop.create_task(self._drain(engine))
        self._drains.add(task)
        task.add_done_callback(self._drains.discard)

    def _take(self) -> list[QueuedCommit]:
        """The next batch: queued flushes in order, none sharing a stream or state row
        (a flush that would goes in a later statement; with several statements in
        flight, two commits on one stream may still race, as without grouping, and
        the versions decide)."""
        queue, batch = self._queue, [self._queue.popleft()]
        self._sending += 1
        streams = set(batch[0].plan.streams)
        states = set(batch[0].plan.states)
        while queue and len(batch) < self._batch:
            plan = queue[0].plan
            if not streams.isdisjoint(plan.streams) or not states.isdisjoint(plan.states):
                break  # it goes in a later statement
            streams.update(plan.streams)
            states.update(plan.states)
            batch.append(queue.popleft())
        room = self._room
        for entry in batch:
            entry.sent = True
            if room is not None:
                room.release()
        return batch

    async def _drain(self, engine: AsyncEngine) -> None:
        try:
            while self._queue:
                if self._linger:
                    await self._ripen()
                    if not self._queue:  # all cancelled meanwhile
                        break
                await self._send(engine)
        finally:
            # Left only on the way out of a cancellation (the loop is closing):
            # their callers are being cancelled too, and nothing of them was sent.
            self._fail_queued(PersistenceError("PostgreSQL commit not sent: the loop is closing"))
            self._in_flight -= 1

    async def _ripen(self) -> None:
        """Wait until the first queued commit has lingered its time, unless a full batch
        is queued when it looks (at most the linger: a commit's time to go never
        moves; a batch that fills during the wait does not cut it short)."""
        queue, loop = self._queue, asyncio.get_running_loop()
        while queue and len(queue) < self._batch:
            left = queue[0].ripe - loop.time()
            if left <= 0:
                return
            await asyncio.sleep(left)

    def _fail_queued(self, error: PersistenceError) -> None:
        while self._queue:
            entry = self._queue.popleft()
            entry.sent = True  # answered: no longer in the queue
            if self._room is not None:
                self._room.release()
            entry.finish([], copy_error(error, "PostgreSQL commit not sent"))

    async def _send(self, engine: AsyncEngine) -> None:
        """Send the next batch as one statement and give every entry its outcome,
        whatever happens (only a cancellation of the drain itself propagates)."""
        batch: list[QueuedCommit] = []
        attempt = Attempt()

        def take() -> FlushPlan | None:
            if not self._queue:
                return None
            batch.extend(self._take())
            attempt.diagnose = len(batch) == 1
            return batch[0].plan if len(batch) == 1 else merged(batch)

        try:
            try:
                start, end = await run_flush(engine, take, attempt=attempt)
            except StatementFailed as failed:
                if not batch:  # no connection: every queued commit learns it now
                    error = failed.error
                    if not isinstance(error, PersistenceError):
                        error = PersistenceError(str(error))
                    self._fail_queued(error)
                    return
                if len(batch) > 1 and failed.kind in ("refused", "absent"):
                    for entry in batch:  # each on its own: its own outcome
                        await _send_alone(engine, entry)
                    return
                fail(batch, failed)
                return
            committed(batch, start, end)
        except BaseException as exc:
            if not batch and isinstance(exc, Exception):  # a bug if ever: answer everyone
                self._fail_queued(persistence_error(exc, "PostgreSQL commit not sent"))
                return
            what = (
                "PostgreSQL commit failed"  # a bug if ever
                if isinstance(exc, Exception)
                else "PostgreSQL commit interrupted; its outcome is unknown"
            )
            for entry in batch:
                if entry.outcome is None:
                    error = (
                        persistence_error(exc, what)
                        if isinstance(exc, Exception)
                        else unknown_outcome(entry.plan, exc)
                    )
                    entry.finish([], error)
            if not isinstance(exc, Exception):
                raise
        finally:
            if batch:
                self._sending -= 1


async def _send_alone(engine: AsyncEngine, entry: QueuedCommit) -> None:
    try:
        start, end = await run_flush(engine, entry.plan)
    except StatementFailed as failed:
        fail([entry], failed)
        return
    except Exception as exc:  # a bug if ever: this caller learns it, the others go on
        entry.finish([], persistence_error(exc, "PostgreSQL commit failed"))
        return
    entry.finish(step_timings(entry.plan, start, end, None), None)


_committers: weakref.WeakKeyDictionary[Engine, GroupCommitter] = weakref.WeakKeyDictionary()


def committer_for(engine: AsyncEngine) -> GroupCommitter | None:
    """The commit queue of ``engine``, or ``None`` when grouping is off (batch of 1)."""
    sync_engine = engine.sync_engine
    committer = _committers.get(sync_engine)
    if committer is None:
        options = engine.get_execution_options()
        batch = options.get(BATCH_OPTION, DEFAULT_BATCH)
        in_flight = options.get(IN_FLIGHT_OPTION, DEFAULT_IN_FLIGHT)
        queue_limit = settings_of(engine).commit_queue
        linger = options.get(LINGER_OPTION, 0.0)
        committer = _committers[sync_engine] = GroupCommitter(batch, in_flight, queue_limit, linger)
    return None if committer.batch == 1 else committer


def describe(engine: AsyncEngine) -> dict[str, Any]:
    """The engine's group-commit settings (for reports)."""
    committer = committer_for(engine)
    if committer is None:
        return {BATCH_OPTION: 1}
    described: dict[str, Any] = {
        BATCH_OPTION: committer.batch,
        IN_FLIGHT_OPTION: committer.in_flight,
    }
    if committer.linger:
        described[LINGER_OPTION] = committer.linger
    return described
