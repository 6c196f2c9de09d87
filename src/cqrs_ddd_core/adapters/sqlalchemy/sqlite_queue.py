"""SQLite: commits on their way to the writer's thread, grouped (group commit).

:class:`WriterQueue` is the part of :class:`~.sqlite.SQLiteWriter` that sends
jobs to its thread (:mod:`.sqlite_thread`): the commit that finds no job out
sends its own at once; commits arriving while a job is out wait in a bounded
queue and go together in the next job, each with an outcome of its own
(:func:`.sqlite_batch.batch_job`). Each caller gets its own outcome, also
when it is cancelled: before its writing began it leaves (never written);
after, it learns what the database did.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import TYPE_CHECKING, Any, TypeVar

from cqrs_ddd_core.adapters.sqlalchemy.sqlite_batch import SLICE_MS, WITHDRAWN, batch_job
from cqrs_ddd_core.adapters.sqlalchemy.sqlite_jobs import rollback
from cqrs_ddd_core.adapters.sqlalchemy.sqlite_outcome import (
    InDoubtError,
    outcome_after_failed_commit,
    unknown_outcome,
)
from cqrs_ddd_core.adapters.sqlalchemy.sqlite_pending import (
    NOT_SENT,
    Box,
    Jobs,
    Pending,
    counted,
    job_done,
    settle,
)
from cqrs_ddd_core.adapters.sqlalchemy.sqlite_split import Written, commit_written, write_inline
from cqrs_ddd_core.adapters.sqlalchemy.sqlite_thread import (
    WriterClosedError,
    WriterThread,
    healthy,
)
from cqrs_ddd_core.domain.messages import utc_now
from cqrs_ddd_core.exceptions import PersistenceError

if TYPE_CHECKING:
    from collections.abc import Callable

    from cqrs_ddd_core.adapters.sqlalchemy.plan import FlushPlan
    from cqrs_ddd_core.adapters.sqlalchemy.sqlite_open import WriterSettings
    from cqrs_ddd_core.persistence.records import StepTiming

__all__ = ["GROUP_LIMIT", "QUEUE_LIMIT", "WriterQueue", "open_thread"]

T = TypeVar("T")

GROUP_LIMIT = 64
"""At most this many units of work share one SQLite transaction (group commit)."""

QUEUE_LIMIT = 4096
"""At most this many commits wait for the writer's thread; one more is refused
at once with a :class:`PersistenceError` (nothing written) instead of piling up
behind a writer that cannot keep up (a disk that stalls, a lock held elsewhere)."""


def open_thread(writer: WriterQueue) -> WriterThread | None:
    """``writer``'s thread, unless it is closed or not opened yet."""
    thread = writer._thread
    return None if thread is None or thread.closed else thread


class WriterQueue:
    """Sends commits to the writer's thread, alone or grouped; see the module docs."""

    __slots__ = ("_drains", "_jobs", "_leading", "_loop", "_queue", "_settings", "_thread")

    def __init__(self) -> None:
        self._thread: WriterThread | None = None
        self._settings: WriterSettings | None = None
        self._jobs = Jobs()
        self._queue: deque[Pending] = deque()
        self._leading = False  # a commit (or a drain task) is sending queued flushes
        self._drains: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def inline(self) -> bool:
        """Whether flushes run on the event loop's thread (decided when the writer opens)."""
        return self._settings is not None and self._settings.inline

    @property
    def split(self) -> bool:
        """Whether groups are written on the event loop's thread and committed on
        the writer's (see :mod:`.sqlite_split`; decided when the writer opens)."""
        return self._settings is not None and self._settings.split

    @property
    def thread(self) -> WriterThread | None:
        """The writer's thread and connection, once opened."""
        return self._thread

    @property
    def _busy_seconds(self) -> float:
        settings = self._settings
        return 30.0 if settings is None else settings.busy_seconds

    # -- group commit on the thread ------------------------------------------

    async def commit_on_thread(self, plan: FlushPlan, timings: list[StepTiming]) -> bool:
        """Flush ``plan`` on the thread, grouped with the flushes queued meanwhile.

        Returns ``False``, having written nothing, if the writer turned out to
        be closed (the caller opens another). A caller cancelled before its
        flush is written leaves (nothing written); after, it waits for the
        outcome and reports it (committed: the cancellation reaches it at its
        next ``await``).

        Raises:
            PersistenceError: ``QUEUE_LIMIT`` commits wait already (nothing written).
        """
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop: what an old one left is gone
            self._loop, self._queue, self._leading = loop, deque(), False
        if self._leading:  # a job is out: wait to go with the next one
            if len(self._queue) >= QUEUE_LIMIT:
                raise PersistenceError(
                    f"The SQLite writer has {QUEUE_LIMIT} commits waiting already; "
                    "this one was refused (nothing written)"
                )
            entry = Pending(plan, loop.create_future(), self._busy_seconds)
            self._queue.append(entry)
            return await self._follow(entry, timings)
        self._leading = True
        try:
            entry = Pending(plan, None, self._busy_seconds)
            cancelled = await self._send([entry])
            if cancelled is not None:
                return await self._cancelled_outcome(entry, timings, cancelled)
            return await self._deliver(entry, timings)
        finally:
            if self._queue:  # queued while we were out: a task sends them
                task = loop.create_task(self._drain())
                self._drains.add(task)
                task.add_done_callback(self._drains.discard)
            else:
                self._leading = False

    async def _follow(self, entry: Pending, timings: list[StepTiming]) -> bool:
        try:
            assert entry.waiter is not None
            await entry.waiter
        except asyncio.CancelledError as exc:
            if not entry.sent:
                with contextlib.suppress(ValueError):  # (a closing drain took it out)
                    self._queue.remove(entry)  # never sent: nothing was written
                raise
            if entry.outcome is None and entry.withdraw():
                raise  # sent, but its writing had not begun: it never will
            while entry.outcome is None:  # being written: wait for what the database did
                waiter = entry.waiter = asyncio.get_running_loop().create_future()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter
            return await self._cancelled_outcome(entry, timings, exc)
        return await self._deliver(entry, timings)

    async def _deliver(self, entry: Pending, timings: list[StepTiming]) -> bool:
        outcome = entry.outcome
        assert outcome is not None
        if outcome is NOT_SENT:
            return False
        steps, error = outcome
        timings.extend(steps)
        if isinstance(error, InDoubtError):
            error = await self.learn(entry.plan, error)
        if error is WITHDRAWN:  # (only a caller that left is withdrawn)
            error = PersistenceError("The commit was withdrawn before it was written")
        if error is not None:
            raise error
        return True

    async def _cancelled_outcome(
        self, entry: Pending, timings: list[StepTiming], cancelled: asyncio.CancelledError
    ) -> bool:
        """A caller cancelled after its flush was written: report what the database did."""
        try:
            committed = await self._deliver(entry, timings)
        except Exception:
            raise cancelled from None  # nothing was kept: nothing to report but the cancellation
        if not committed:
            raise cancelled
        current = asyncio.current_task()
        if current is not None:  # committed: deliver the cancellation at the next await
            current.uncancel()
            current.cancel()
        return True

    async def learn(self, plan: FlushPlan, doubt: InDoubtError) -> BaseException | None:
        """What a ``COMMIT`` whose connection could not tell did: look its event ids
        up on the thread's connection (a fresh one: the thread discarded the
        other). ``None``: committed; else the refusal or
        :class:`~cqrs_ddd_core.exceptions.CommitOutcomeUnknownError`."""
        cause = doubt.cause
        thread = open_thread(self)
        if thread is None:
            return unknown_outcome(plan, cause)
        try:  # counted, so that nothing writes inline meanwhile
            future = thread.submit(
                counted, self._jobs, Box(), outcome_after_failed_commit, plan, cause
            )
        except Exception:
            return unknown_outcome(plan, cause)
        self._jobs.sent += 1
        cancelled = False
        while not future.done():  # a short local query: wait for it through cancellation
            try:
                await asyncio.shield(future)
            except asyncio.CancelledError:
                cancelled = True
            except Exception:
                break
        if cancelled:  # handed back at the caller's next await
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
                current.cancel()
        if future.cancelled() or future.exception() is not None:
            return unknown_outcome(plan, cause)
        found: BaseException | None = future.result()
        return found

    def _take(self) -> list[Pending]:
        queue = self._queue
        batch = [queue.popleft() for _ in range(min(len(queue), GROUP_LIMIT))]
        for entry in batch:
            entry.sent = True
        return batch

    async def _drain(self) -> None:
        try:
            while self._queue:
                cancelled = await self._send(self._take())
                if cancelled is not None:  # the loop is closing
                    raise cancelled
        finally:
            while self._queue:  # left only on the way out of a failure: nothing was sent
                self._queue.popleft().finish(None)
            self._leading = False

    async def _send(self, batch: list[Pending]) -> asyncio.CancelledError | None:
        """Run one job for ``batch`` (a lone flush, or a group) and give each entry
        its outcome, whatever happens; never leaves an entry without one.

        Returns the cancellation that reached the caller meanwhile, if any: a
        lone entry whose writing had not begun is withdrawn (it never will
        be); otherwise the job's outcome is waited for and delivered.
        """
        box = Box()
        deadline = min(entry.deadline for entry in batch)
        slice_ms = SLICE_MS if self.inline or self.split else None
        plans = [entry.plan for entry in batch]
        written: Written | None = None
        try:
            written_on = None if self._thread is None else self._thread.connection
            written = self._write_inline(plans, batch)
            if written is None:
                outcomes = await self.execute(
                    batch_job, plans, batch, utc_now(), deadline, slice_ms, box=box
                )
            elif written[1]:  # written: the COMMIT waits on the disk, on the thread
                outcomes = await self.execute(
                    commit_written, written_on, plans, written[0], deadline, box=box
                )
            else:
                outcomes = written[0]  # refused, or withdrawn: nothing to commit
        except asyncio.CancelledError as exc:
            lone = len(batch) == 1 and batch[0].waiter is None  # its caller is the one cancelled
            if lone and not box.done and batch[0].withdraw():
                batch[0].finish(([], WITHDRAWN))
                return exc
            if not box.done:
                await job_done(box)
            settle(batch, box, exc)
            return exc
        except BaseException as exc:
            if written is not None and written[1] and not box.ran:
                self._undo_inline()  # its COMMIT never went: keep nothing of it
            settle(batch, box, exc)
            if not isinstance(exc, Exception):
                raise
            return None
        for entry, outcome in zip(batch, outcomes, strict=True):
            entry.finish(outcome)
        return None

    def _write_inline(self, plans: list[FlushPlan], batch: list[Pending]) -> Written | None:
        """Write ``plans`` on the event loop's thread when the writer splits its
        commits and nothing is out on its thread (see :mod:`.sqlite_split`);
        ``None``: not written, send the whole job to the thread."""
        thread = self._thread
        if not self.split or thread is None or not thread.idle:
            return None
        conn = thread.connection
        if conn is None:
            return None
        written = write_inline(conn, plans, list(batch), utc_now())
        if written is not None and not written[1] and not healthy(conn):
            thread.discard_inline(conn)  # its ROLLBACK failed: never reuse it
        return written

    def _undo_inline(self) -> None:
        thread = self._thread
        conn = None if thread is None else thread.connection
        if conn is not None:
            rollback(conn)

    async def execute(self, job: Callable[..., T], *args: Any, box: Box | None = None) -> T:
        """Run ``job(connection, *args)`` on the writer's thread, counted (see
        :meth:`_idle`); ``box`` receives its result there, even if the caller is
        cancelled meanwhile.

        Raises:
            WriterClosedError: the writer is closed (nothing ran).
        """
        jobs, box = self._jobs, box or Box()
        thread = self._thread
        if thread is None:
            raise WriterClosedError("The SQLite writer is not open")
        future = thread.hand_over(counted, jobs, box, job, *args)
        jobs.sent += 1
        result: T = await future
        return result
