"""SQLite: where a commit's flush runs, and commits grouped on the writer thread.

aiosqlite runs each connection on a thread of its own and every call is a
hop to it and back (~70 µs); SQLAlchemy makes several per statement, so a
command with three rows would pay over a millisecond in hops alone. Instead
the unit of work hands the database thread **one** job (:mod:`.sqlite_jobs`)
that writes and commits the whole flush, or runs that job inline on the event
loop when the commit does not wait on the disk (``synchronous``
``NORMAL``/``OFF``; see ``create_engine``'s ``sqlite_flush``).

The connection is a normal connection of the engine's pool, checked out once
per engine and kept for writing (:class:`SQLiteWriter`): SQLite has a single
writer anyway, and the aiosqlite thread's queue (or the event loop itself,
inline) runs the flushes of concurrent commits one after the other, with no
lock in the event loop and no busy-waiting between them; flushes that wait
for the thread are written together (group commit). ``engine.dispose()``
closes it like every other connection of the pool. Reads use other pooled
connections; in WAL mode they never wait for the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args

import structlog
from sqlalchemy import event
from sqlalchemy.util import greenlet_spawn

from cqrs_ddd_core.adapters.sqlalchemy.errors import persistence_error
from cqrs_ddd_core.adapters.sqlalchemy.sqlite_jobs import (
    BUSY,
    Outcome,
    flush_job,
    group_job,
    passive_checkpoint,
    prepare_writer,
    waiting_job,
)
from cqrs_ddd_core.domain.messages import utc_now
from cqrs_ddd_core.exceptions import ConfigurationError, PersistenceError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine
    from sqlalchemy.pool import Pool, PoolProxiedConnection

    from cqrs_ddd_core.adapters.sqlalchemy.plan import FlushPlan
    from cqrs_ddd_core.persistence.records import StepTiming

__all__ = [
    "CHECKPOINT_EVERY",
    "FLUSH_MODE_OPTION",
    "GROUP_LIMIT",
    "SQLiteFlushMode",
    "SQLiteWriter",
    "flush_open_writer",
    "flush_sqlite",
    "writer_for",
]

T = TypeVar("T")
_log = structlog.get_logger("cqrs_ddd_core.adapters.sqlalchemy")

FLUSH_MODE_OPTION = "sqlite_flush"
"""The engine execution option naming where SQLite flushes run (see :class:`SQLiteWriter`)."""

SQLiteFlushMode = Literal["auto", "thread", "loop"]
"""Where a SQLite commit's flush runs: ``"thread"`` on the aiosqlite thread (one
hop there and back), ``"loop"`` inline on the event loop's thread, ``"auto"``
(the default) inline when the commit cannot wait on the disk (WAL with
``synchronous`` ``NORMAL`` or ``OFF``) and on the thread when it fsyncs."""


class _Jobs:
    """Jobs sent to one aiosqlite thread and jobs it finished (each written by one thread)."""

    __slots__ = ("done", "sent")

    def __init__(self) -> None:
        self.sent = 0  # by the event loop's thread
        self.done = 0  # by the database thread, when a job ends (aiosqlite runs every job)


class _Box:
    """What one job did on the database thread, for a caller cancelled meanwhile."""

    __slots__ = ("done", "ran", "value")

    def __init__(self) -> None:
        self.ran = False  # it started
        self.done = False  # it ended (returned or raised)
        self.value: Any = None  # what it returned


def _counted(jobs: _Jobs, box: _Box, job: Callable[..., T], *args: Any) -> T:
    box.ran = True
    try:
        box.value = result = job(*args)
        return result
    finally:
        box.done = True
        jobs.done += 1


CHECKPOINT_EVERY = 250
"""An inline writer checkpoints the WAL on its thread after this many commits:
about 2,300 WAL pages (9 MB) for a command writing three rows, where SQLite's
own auto-checkpoint waits for 1,000. Fewer checkpoints, fewer database-file
syncs: 2-14% faster than checkpointing every 100 commits, measured."""

GROUP_LIMIT = 64
"""At most this many units of work share one SQLite transaction (group commit)."""

_NOT_SENT: Outcome = ([], None)  # the connection was closed: nothing was written


class _Pending:
    """One unit of work's flush waiting for the thread (group commit)."""

    __slots__ = ("outcome", "plan", "sent", "waiter")

    def __init__(self, plan: FlushPlan, waiter: asyncio.Future[None] | None) -> None:
        self.plan = plan
        self.waiter = waiter
        self.sent = False
        self.outcome: Outcome | None = None

    def finish(self, outcome: Outcome | None) -> None:
        self.outcome = _NOT_SENT if outcome is None else outcome
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _deliver(entry: _Pending, timings: list[StepTiming]) -> bool:
    outcome = entry.outcome
    assert outcome is not None
    if outcome is _NOT_SENT:
        return False
    steps, error = outcome
    timings.extend(steps)
    if error is not None:
        raise error
    return True


def _cancelled_outcome(
    entry: _Pending, timings: list[StepTiming], cancelled: asyncio.CancelledError
) -> bool:
    """A caller cancelled after its flush was sent: report what the database did."""
    outcome = entry.outcome
    assert outcome is not None
    steps, error = outcome
    timings.extend(steps)
    if outcome is _NOT_SENT or error is not None:
        raise cancelled  # nothing was kept: nothing to report but the cancellation
    current = asyncio.current_task()
    if current is not None:  # committed: deliver the cancellation at the next await
        current.uncancel()
        current.cancel()
    return True


def _settle(batch: list[_Pending], box: _Box, alone: bool, exc: BaseException) -> None:
    """Each entry's outcome when the job's answer did not come back the normal way."""
    if box.done and box.value is not None:  # it ran to its end: its answer stands
        outcomes = [box.value] if alone else box.value
        for entry, outcome in zip(batch, outcomes, strict=True):
            entry.finish(outcome)
    elif not box.ran:  # never ran (aiosqlite refused it, or closed first): nothing written
        for entry in batch:
            entry.finish(None)
    else:  # it ran and raised, which a job never does: the database may have it or not
        for entry in batch:
            error = persistence_error(exc, "SQLite commit failed; its outcome is unknown")
            entry.finish(([], error))


class SQLiteWriter:
    """The connection one engine writes through, and where its flushes run.

    A flush runs either on the connection's aiosqlite thread (one hop there
    and back, 50-300 µs on a busy machine) or, when the commit does not wait
    on the disk, inline on the event loop's thread: the job is a few hundred
    microseconds of SQLite work, about what the hop costs. Inline, the
    connection's busy timeout is 0, so a write lock held by another process
    never blocks the loop: the job gives up before writing anything and the
    flush goes to the thread, which waits for the lock as configured
    (``sqlite_busy_timeout``). While a job is on the thread, later flushes
    queue behind it, so flushes keep their order and the connection is never
    used by two threads at once.

    **Group commit on the thread.** Flushes that arrive while a job is on the
    thread wait in a queue; the next job takes all of them (up to
    ``GROUP_LIMIT``) and writes them in one transaction, each in a savepoint
    of its own, so they share one ``COMMIT`` (one fsync at ``FULL``) and each
    keeps its own outcome (see :func:`group_job`). The commit that finds no
    job running sends its own right away (a lone sender waits for nobody);
    if flushes queued meanwhile, a task goes on sending them.
    """

    __slots__ = (
        "__weakref__",
        "_busy_ms",
        "_checkpointing",
        "_drains",
        "_driver",
        "_fairy",
        "_inline",
        "_jobs",
        "_leading",
        "_loop",
        "_queue",
        "_since_checkpoint",
    )

    def __init__(self) -> None:
        self._fairy: PoolProxiedConnection | None = None
        self._driver: Any = None
        self._inline = False
        self._busy_ms = 0
        self._jobs = _Jobs()
        self._queue: deque[_Pending] = deque()
        self._leading = False  # a commit (or a drain task) is sending queued flushes
        self._drains: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._since_checkpoint = 0  # inline commits since the last checkpoint
        self._checkpointing = False  # one is due or running: commits go to the thread

    @property
    def inline(self) -> bool:
        """Whether flushes run on the event loop's thread (decided when the writer opens)."""
        return self._inline

    # -- WAL checkpoints of an inline writer ---------------------------------

    def committed_inline(self) -> None:
        """Count an inline commit; every ``CHECKPOINT_EVERY`` of them, checkpoint the
        WAL on the writer's thread. Until it is done the writer is not idle, so
        the commits meanwhile go to the thread too and wait behind it: nothing
        writes while it runs, so it completes and the next write restarts the WAL."""
        self._since_checkpoint += 1
        if self._since_checkpoint < CHECKPOINT_EVERY or self._checkpointing:
            return
        self._since_checkpoint, self._checkpointing = 0, True
        task = asyncio.get_running_loop().create_task(self._checkpoint())
        self._drains.add(task)
        task.add_done_callback(self._drains.discard)

    async def _checkpoint(self) -> None:
        try:
            driver = self._driver
            conn = None if driver is None else driver._connection
            if conn is not None:
                await self.execute(passive_checkpoint, conn)
        except Exception as exc:  # SQLite keeps the WAL; the next checkpoint copies it
            _log.warning("sqlite_checkpoint_failed", error_type=type(exc).__name__, error=str(exc))
        finally:
            self._checkpointing = False

    def _idle(self) -> bool:
        jobs = self._jobs
        return jobs.sent == jobs.done and not self._leading and not self._checkpointing

    # -- group commit on the thread ------------------------------------------

    async def commit_on_thread(self, plan: FlushPlan, timings: list[StepTiming]) -> bool:
        """Flush ``plan`` on the thread, grouped with the flushes queued meanwhile.

        Returns ``False``, having written nothing, if the connection turned out
        to be closed (the caller opens another). A caller cancelled before its
        flush was sent leaves the queue (nothing written); after, it waits for
        the outcome and reports it (committed: the cancellation reaches it at
        its next ``await``).
        """
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop: what an old one left is gone
            self._loop, self._queue, self._leading = loop, deque(), False
        if self._leading:  # a job is out: wait to go with the next one
            entry = _Pending(plan, loop.create_future())
            self._queue.append(entry)
            return await self._follow(entry, timings)
        self._leading = True
        try:
            return await self._send_alone(plan, timings)
        finally:
            if self._queue:  # queued while we were out: a task sends them
                task = loop.create_task(self._drain())
                self._drains.add(task)
                task.add_done_callback(self._drains.discard)
            else:
                self._leading = False

    async def _send_alone(self, plan: FlushPlan, timings: list[StepTiming]) -> bool:
        """The flush of a commit that found no job out: sent at once, by itself."""
        entry = _Pending(plan, None)
        cancelled = await self._send([entry])
        if cancelled is not None:
            return _cancelled_outcome(entry, timings, cancelled)
        return _deliver(entry, timings)

    async def _follow(self, entry: _Pending, timings: list[StepTiming]) -> bool:
        try:
            assert entry.waiter is not None
            await entry.waiter
        except asyncio.CancelledError as exc:
            if not entry.sent:
                with contextlib.suppress(ValueError):  # (a closing drain took it out)
                    self._queue.remove(entry)  # never sent: nothing was written
                raise
            while entry.outcome is None:  # sent: wait for what the database did
                waiter = entry.waiter = asyncio.get_running_loop().create_future()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter
            return _cancelled_outcome(entry, timings, exc)
        return _deliver(entry, timings)

    def _take(self) -> list[_Pending]:
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

    async def _send(self, batch: list[_Pending]) -> asyncio.CancelledError | None:
        """Run one job for ``batch`` (a lone flush, or a group) and give each entry
        its outcome, whatever happens; never leaves an entry without one.

        Returns the cancellation that reached the caller meanwhile, if any (the
        job runs to its end regardless, and its outcomes are delivered).
        """
        driver = self._driver
        conn = None if driver is None else driver._connection
        if conn is None:
            for entry in batch:
                entry.finish(None)  # not sent: each caller opens another writer
            return None
        box = _Box()
        alone = len(batch) == 1
        try:
            if not alone:
                busy_ms = self._busy_ms if self._inline else None
                plans = [entry.plan for entry in batch]
                outcomes = await self.execute(group_job, conn, plans, utc_now(), busy_ms, box=box)
            elif self._inline:  # its busy timeout is 0: wait for the lock this once
                outcomes = [
                    await self.execute(
                        waiting_job, conn, batch[0].plan, utc_now(), self._busy_ms, box=box
                    )
                ]
            else:
                outcomes = [await self.execute(flush_job, conn, batch[0].plan, utc_now(), box=box)]
        except asyncio.CancelledError as exc:
            if not box.done:
                await _queue_drained(driver)
            _settle(batch, box, alone, exc)
            return exc
        except BaseException as exc:
            _settle(batch, box, alone, exc)
            if not isinstance(exc, Exception):
                raise
            return None
        for entry, outcome in zip(batch, outcomes, strict=True):
            entry.finish(outcome)
        return None

    def _thread_flush(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        """The job that flushes on the thread, and its arguments after the plan and time."""
        if self._inline:  # its busy timeout is 0: wait for the lock this once
            return waiting_job, (self._busy_ms,)
        return flush_job, ()

    async def execute(self, job: Callable[..., T], *args: Any, box: _Box | None = None) -> T:
        """Run ``job(*args)`` on the open writer's thread, counted (see :meth:`_idle`);
        ``box`` receives its result there, even if the caller is cancelled meanwhile.

        Raises:
            ValueError: the connection is closed (aiosqlite's error; nothing ran).
        """
        jobs, box = self._jobs, box or _Box()
        jobs.sent += 1
        try:
            result: T = await self._driver._execute(_counted, jobs, box, job, *args)
        except ValueError:
            if not box.ran:  # aiosqlite refused it: "Connection closed"
                jobs.sent -= 1
            raise
        return result

    async def run(self, job: Callable[..., T], engine: AsyncEngine, *args: Any) -> T:
        """Run ``job(sqlite3_connection, *args)`` on the writer's thread, in one hop."""
        driver = self._driver
        if driver is None:
            driver = await self._open(engine)
        try:
            return await self.execute(job, driver._conn, *args)
        except ValueError as exc:  # aiosqlite: "Connection closed" (its thread is gone)
            fairy = self._fairy
            if self._driver is driver:
                self._fairy, self._driver = None, None  # the next commit opens another
                if fairy is not None:
                    with contextlib.suppress(Exception):
                        await greenlet_spawn(fairy.invalidate, exc)
            raise persistence_error(exc, "The SQLite writer connection is closed") from exc

    async def _open(self, engine: AsyncEngine) -> Any:
        mode = engine.get_execution_options().get(FLUSH_MODE_OPTION, "auto")
        if mode not in get_args(SQLiteFlushMode):
            raise ConfigurationError(
                f"{FLUSH_MODE_OPTION} must be one of {get_args(SQLiteFlushMode)}, got {mode!r}"
            )
        fairy = await engine.raw_connection()
        if self._driver is not None:  # another commit opened it while we waited
            await greenlet_spawn(fairy.close)
            return self._driver
        driver: Any = fairy.driver_connection
        if not callable(getattr(driver, "_execute", None)):
            await greenlet_spawn(fairy.close)
            raise PersistenceError(
                "This aiosqlite version offers no way to run a function on its thread "
                "(Connection._execute); install aiosqlite>=0.20"
            )
        try:
            inline, busy_ms = await driver._execute(prepare_writer, driver._conn, mode)
        except BaseException:
            with contextlib.suppress(Exception):
                await greenlet_spawn(fairy.close)
            raise
        if self._driver is not None:  # opened by another commit meanwhile
            await greenlet_spawn(fairy.close)
            return self._driver
        self._fairy, self._driver, self._jobs = fairy, driver, _Jobs()
        self._inline, self._busy_ms = inline, busy_ms
        return driver

    def close(self) -> None:
        """Give the connection back for good (runs inside ``engine.dispose()``)."""
        fairy, self._fairy, self._driver = self._fairy, None, None
        if fairy is not None:
            fairy.detach()  # closed, not returned: the pool it came from is going away
            fairy.close()


_writers: weakref.WeakKeyDictionary[Pool, SQLiteWriter] = weakref.WeakKeyDictionary()


def writer_for(engine: AsyncEngine) -> SQLiteWriter:
    """The writer of ``engine``'s current pool (a new one after ``dispose()``)."""
    pool = engine.sync_engine.pool
    writer = _writers.get(pool)
    if writer is None:
        writer = _writers[pool] = SQLiteWriter()
        ref = weakref.ref(writer)

        def _on_dispose(_engine: Any) -> None:
            found = ref()
            if found is not None:
                found.close()

        event.listen(engine.sync_engine, "engine_disposed", _on_dispose)
    return writer


async def flush_sqlite(engine: AsyncEngine, plan: FlushPlan, timings: list[StepTiming]) -> None:
    """Write and commit ``plan`` in one hop; append the measured steps.

    Raises:
        ConcurrencyError: a stream or state row was not at the expected version.
        PersistenceError: any other database failure (nothing was written).
    """
    writer = writer_for(engine)
    if writer._driver is None:
        await writer._open(engine)
    job, extra = writer._thread_flush()
    steps, error = await writer.run(job, engine, plan, utc_now(), *extra)
    timings.extend(steps)
    if error is not None:
        raise error


def _noop() -> None:
    return None


async def _queue_drained(driver: Any) -> None:
    """Wait, through any cancellation, until the jobs queued so far on ``driver``'s
    thread have run: the thread runs its queue in order, so a no-op behind them will do."""
    while True:
        try:
            await driver._execute(_noop)
        except asyncio.CancelledError:
            continue  # the no-op was dropped, not the jobs before it: queue another
        except ValueError:
            return  # closed: aiosqlite runs every job queued before its close first
        return


async def flush_open_writer(
    writer: SQLiteWriter, plan: FlushPlan, timings: list[StepTiming]
) -> bool:
    """:func:`flush_sqlite` on an open writer, run to its end even if the caller is cancelled.

    Inline (see :class:`SQLiteWriter`) the job runs right here and cannot be
    interrupted. On the thread (grouped with the flushes queued meanwhile) it
    needs no task and no ``asyncio.shield`` (tens of microseconds a commit):
    the job stays queued on the database thread when the aiosqlite future it
    was awaited through is cancelled, and leaves its result in a box on the
    way out. A cancelled caller waits for the queue to drain, then reads what
    the job did: committed, the cancellation reaches it at its next ``await``;
    rolled back (or never run), the cancellation is raised.

    Returns ``False``, having sent nothing, if the writer has no open
    connection; :func:`flush_sqlite` then opens one (or reports it closed).

    Raises:
        ConcurrencyError: a stream or state row was not at the expected version.
        PersistenceError: any other database failure (nothing was written).
    """
    driver = writer._driver
    if driver is None or driver._connection is None:
        return False
    conn = driver._connection
    recorded_at = utc_now()
    if writer._inline and writer._idle():
        steps, error = flush_job(conn, plan, recorded_at, wait=False)
        if error is not BUSY:
            timings.extend(steps)
            if error is not None:
                raise error
            writer.committed_inline()
            return True
        # Another process holds the write lock: wait for it on the thread.
    return await writer.commit_on_thread(plan, timings)
