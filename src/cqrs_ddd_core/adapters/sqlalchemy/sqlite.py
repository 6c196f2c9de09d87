"""SQLite: the whole flush and the commit in one hop to the database thread.

aiosqlite runs each connection on a thread of its own and every call is a
hop to it and back (~70 µs); SQLAlchemy makes several per statement, so a
command with three rows would pay over a millisecond in hops alone. Instead
the unit of work hands the database thread **one** function that runs
``BEGIN IMMEDIATE``, the version checks, one ``executemany`` per table, the
state updates and ``COMMIT`` (or ``ROLLBACK``) on the underlying ``sqlite3``
connection, measures each step there, and returns.

The connection is a normal connection of the engine's pool, checked out once
per engine and kept for writing (:class:`SQLiteWriter`): SQLite has a single
writer anyway, and the aiosqlite thread's queue (or the event loop itself,
inline) runs the flushes of concurrent commits one after the other, with no
lock in the event loop and no busy-waiting between them. Each job leaves the connection outside any
transaction, so SQLAlchemy's view of it stays true. ``engine.dispose()``
closes it like every other connection of the pool. Reads use other pooled
connections; in WAL mode they never wait for the writer.

Versions are checked inside the write transaction, which holds SQLite's
write lock: a stream's head (``max(version)``, an index seek) must equal the
expected version, and a state row is updated only at the version it was
loaded at. A new stream (expected version 0) needs no query: its first row
is version 1, which the unique ``(aggregate_type, aggregate_id, version)``
key refuses if the stream exists; that key is the backstop for the rest.

Where the job runs is :class:`SQLiteWriter`'s choice: on the aiosqlite
thread, or inline on the event loop's thread when the commit does not wait
on the disk (``synchronous`` ``NORMAL``/``OFF``; see ``create_engine``'s
``sqlite_flush``).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import weakref
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args

from sqlalchemy import bindparam, event, func, insert, select, update
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.util import greenlet_spawn

from cqrs_ddd_core.adapters.sqlalchemy.errors import concurrency_error, persistence_error
from cqrs_ddd_core.adapters.sqlalchemy.plan import AUDIT_COLUMNS, OUTBOX_COLUMNS, as_utc
from cqrs_ddd_core.adapters.sqlalchemy.tables import aggregate_state, audit_log, events, outbox
from cqrs_ddd_core.domain.messages import utc_now
from cqrs_ddd_core.exceptions import ConcurrencyError, ConfigurationError, PersistenceError
from cqrs_ddd_core.persistence.records import StepTiming

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine
    from sqlalchemy.pool import Pool, PoolProxiedConnection

    from cqrs_ddd_core.adapters.sqlalchemy.plan import FlushPlan

__all__ = ["SQLiteWriter", "flush_open_writer", "flush_sqlite", "sqlite_timestamp", "writer_for"]

T = TypeVar("T")
SYSTEM = "sqlite"
_now = time.time_ns

EVENT_COLUMNS = (
    "event_id",
    "aggregate_type",
    "aggregate_id",
    "version",
    "event_type",
    "schema_version",
    "payload",
    "metadata",
    "occurred_at",
    "recorded_at",
    "correlation_id",
    "causation_id",
)


def _sql(statement: Any, keys: tuple[str, ...] | None = None) -> str:
    compiled = statement.compile(dialect=sqlite_dialect.dialect(), column_keys=keys)
    if keys is not None and tuple(compiled.positiontup) != keys:
        raise RuntimeError(f"unexpected parameter order {compiled.positiontup} for {keys}")
    return str(compiled)


_INSERT_EVENTS = _sql(insert(events), EVENT_COLUMNS)
_INSERT_OUTBOX = _sql(insert(outbox), OUTBOX_COLUMNS)
_INSERT_AUDIT = _sql(insert(audit_log), AUDIT_COLUMNS)
_INSERT_STATE = _sql(
    insert(aggregate_state), ("aggregate_type", "aggregate_id", "version", "state", "updated_at")
)
_STREAM_HEAD = _sql(
    select(func.max(events.c.version)).where(
        events.c.aggregate_type == bindparam("t"), events.c.aggregate_id == bindparam("i")
    )
)
_STATE_VERSION = _sql(
    select(aggregate_state.c.version).where(
        aggregate_state.c.aggregate_type == bindparam("t"),
        aggregate_state.c.aggregate_id == bindparam("i"),
    )
)
_UPDATE_STATE = _sql(
    update(aggregate_state)
    .where(
        aggregate_state.c.aggregate_type == bindparam("t"),
        aggregate_state.c.aggregate_id == bindparam("i"),
        aggregate_state.c.version == bindparam("e"),
    )
    .values(version=bindparam("v"), state=bindparam("s"), updated_at=bindparam("u"))
)


def sqlite_timestamp(value: datetime) -> str:
    """``value`` in UTC as SQLAlchemy's SQLite ``DATETIME`` stores it (sorts as text)."""
    return as_utc(value).replace(tzinfo=None).isoformat(" ", "microseconds")


def _opt_timestamp(value: datetime | None) -> str | None:
    return None if value is None else sqlite_timestamp(value)


class _Failure(Exception):
    """Carries a translated error out of the writing code."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class _InStep(Exception):
    """What went wrong while writing a plan, and the step it went wrong in."""

    def __init__(
        self, exc: BaseException, operation: str, collection: str | None, rows: int, start: int
    ) -> None:
        super().__init__(str(exc))
        self.exc, self.operation, self.collection = exc, operation, collection
        self.rows, self.start = rows, start


class _Busy(Exception):
    """Another connection holds the write lock and this job may not wait for it."""


_BUSY = _Busy()

Outcome = tuple[list[StepTiming], BaseException | None]
"""A flush's measured steps and the error that aborted it (``None``: committed)."""


def _write_plan(
    conn: sqlite3.Connection, plan: FlushPlan, now_text: str, timings: list[StepTiming]
) -> None:
    """Write ``plan``'s rows in the open transaction, measuring each step.

    Raises:
        _InStep: carrying the error (a :class:`_Failure` for a version
            conflict found here, else the driver's) and the step it stopped.
    """
    operation, collection, rows, start = "INSERT", "events", len(plan.events), _now()
    try:
        if plan.events:
            for append in plan.streams.values():
                if not append.expected_version:
                    # A new stream: its first row is version 1, and the unique
                    # (type, id, version) key refuses it if the stream exists
                    # (versions start at 1 and have no gaps); _translate names it.
                    continue
                head = conn.execute(
                    _STREAM_HEAD, (append.aggregate_type, append.aggregate_id)
                ).fetchone()
                actual = (head[0] if head else None) or 0
                if actual != append.expected_version:
                    raise _Failure(ConcurrencyError(append.stream, append.expected_version, actual))
            conn.executemany(
                _INSERT_EVENTS,
                [
                    (
                        e.event_id,
                        e.aggregate_type,
                        e.aggregate_id,
                        e.version,
                        e.event_type,
                        e.schema_version,
                        e.payload_json,
                        e.metadata_json,
                        sqlite_timestamp(e.occurred_at),
                        now_text,
                        e.correlation_id,
                        e.causation_id,
                    )
                    for e in plan.events
                ],
            )
            timings.append(StepTiming(operation, collection, SYSTEM, start, _now(), rows))

        if plan.outbox:
            operation, collection, rows, start = "INSERT", "outbox", len(plan.outbox), _now()
            conn.executemany(_INSERT_OUTBOX, [_outbox_row(row) for row in plan.outbox])
            timings.append(StepTiming(operation, collection, SYSTEM, start, _now(), rows))

        if plan.audit:
            operation, collection, rows, start = "INSERT", "audit_log", len(plan.audit), _now()
            conn.executemany(_INSERT_AUDIT, [_audit_row(row) for row in plan.audit])
            timings.append(StepTiming(operation, collection, SYSTEM, start, _now(), rows))

        inserts, updates = plan.state_inserts, plan.state_updates
        if inserts:
            operation, collection, rows, start = "INSERT", "aggregate_state", len(inserts), _now()
            for write in inserts:
                try:
                    conn.execute(
                        _INSERT_STATE,
                        (
                            write.aggregate_type,
                            write.aggregate_id,
                            write.version,
                            write.state_json,
                            now_text,
                        ),
                    )
                except sqlite3.IntegrityError as exc:
                    actual = _state_version(conn, write.aggregate_type, write.aggregate_id)
                    raise _Failure(concurrency_error(write.stream, 0, actual, exc)) from exc
            timings.append(StepTiming(operation, collection, SYSTEM, start, _now(), rows))
        if updates:
            operation, collection, rows, start = "UPDATE", "aggregate_state", len(updates), _now()
            for write in updates:
                cursor = conn.execute(
                    _UPDATE_STATE,
                    (
                        write.version,
                        write.state_json,
                        now_text,
                        write.aggregate_type,
                        write.aggregate_id,
                        write.expected_version,
                    ),
                )
                if cursor.rowcount != 1:
                    actual = _state_version(conn, write.aggregate_type, write.aggregate_id)
                    raise _Failure(ConcurrencyError(write.stream, write.expected_version, actual))
            timings.append(StepTiming(operation, collection, SYSTEM, start, _now(), rows))
    except BaseException as exc:
        raise _InStep(exc, operation, collection, rows, start) from exc


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is open; best effort (the original error is what matters)."""
    with contextlib.suppress(sqlite3.Error):  # a closed connection raises even on the check
        if conn.in_transaction:
            conn.rollback()


def _failed(
    conn: sqlite3.Connection,
    plan: FlushPlan,
    timings: list[StepTiming],
    exc: BaseException,
    step: tuple[str, str | None, int, int],
) -> Outcome:
    """Roll back, translate ``exc`` and record the step it stopped (as failed)."""
    end = _now()
    _rollback(conn)
    error = exc.error if isinstance(exc, _Failure) else _translate(conn, plan, exc)
    operation, collection, rows, start = step
    timings.append(
        StepTiming(operation, collection, SYSTEM, start, end, rows, type(error).__name__)
    )
    return timings, error


def _flush_job(
    conn: sqlite3.Connection, plan: FlushPlan, recorded_at: datetime, *, wait: bool = True
) -> Outcome:
    """Write ``plan`` in one transaction on ``conn``.

    Runs on the database thread, or inline on the event loop's (``wait=False``:
    the connection's busy timeout is 0, and if another connection holds the
    write lock the job gives up at once, having written nothing, and returns
    the ``_BUSY`` marker so that the caller can wait for the lock on the
    database thread instead).

    Returns the measured steps and the error that aborted the transaction
    (already rolled back and translated), if any. Never raises.
    """
    timings: list[StepTiming] = []
    now_text = sqlite_timestamp(recorded_at)
    start = _now()
    try:
        conn.execute("BEGIN IMMEDIATE")
    except BaseException as exc:
        if (
            not wait
            and isinstance(exc, sqlite3.OperationalError)
            and exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY  # extended codes too
        ):
            return timings, _BUSY
        return _failed(conn, plan, timings, exc, ("BEGIN", None, 0, start))
    timings.append(StepTiming("BEGIN", None, SYSTEM, start, _now()))
    try:
        _write_plan(conn, plan, now_text, timings)
    except _InStep as failed:
        step = (failed.operation, failed.collection, failed.rows, failed.start)
        return _failed(conn, plan, timings, failed.exc, step)
    start = _now()
    try:
        conn.commit()
    except BaseException as exc:
        return _failed(conn, plan, timings, exc, ("COMMIT", None, 0, start))
    timings.append(StepTiming("COMMIT", None, SYSTEM, start, _now()))
    return timings, None


_SAVEPOINT = "cqrs_ddd_plan"


def _group_job(
    conn: sqlite3.Connection, plans: list[FlushPlan], recorded_at: datetime, busy_ms: int | None
) -> list[Outcome]:
    """Write several units of work in one transaction, each in a savepoint of its own.

    One ``COMMIT`` (one fsync at ``FULL``) for all of them, and each its own
    outcome: a plan that fails (a version conflict, a duplicate id) is rolled
    back to its savepoint and the others go on. If the transaction itself is
    lost (SQLite rolls back the whole transaction on some errors, such as a
    full disk), a savepoint cannot be rolled back, or the commit fails, every
    plan fails and the transaction is rolled back: nothing was written.
    ``busy_ms``: the busy timeout to wait with, for a writer that flushes
    inline (whose timeout is 0). Never raises.
    """
    try:
        if busy_ms is not None:
            conn.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
        return _group(conn, plans, recorded_at)
    except BaseException as exc:  # a bug or a dead connection: nothing may stay half done
        _rollback(conn)
        cause = exc if isinstance(exc, Exception) else None
        if cause is None:
            raise
        return [([], persistence_error(cause, "SQLite group commit failed")) for _ in plans]
    finally:
        if busy_ms is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA busy_timeout=0")


def _group(
    conn: sqlite3.Connection, plans: list[FlushPlan], recorded_at: datetime
) -> list[Outcome]:
    now_text = sqlite_timestamp(recorded_at)
    start = _now()
    try:
        conn.execute("BEGIN IMMEDIATE")
    except BaseException as exc:
        return [_failed(conn, plan, [], exc, ("BEGIN", None, 0, start)) for plan in plans]
    begin = StepTiming("BEGIN", None, SYSTEM, start, _now())
    outcomes: list[Outcome] = []
    for index, plan in enumerate(plans):
        timings = [begin]
        savepoint = f"cqrs_ddd_plan_{index}"  # one name per plan: none can undo another
        try:
            conn.execute(f"SAVEPOINT {savepoint}")
            _write_plan(conn, plan, now_text, timings)
            conn.execute(f"RELEASE {savepoint}")
        except BaseException as exc:
            failed = exc if isinstance(exc, _InStep) else _InStep(exc, "INSERT", None, 0, _now())
            try:
                if not isinstance(failed.exc, Exception):
                    raise failed.exc  # an interrupt: nothing of the group stays
                conn.execute(f"ROLLBACK TO {savepoint}")
                conn.execute(f"RELEASE {savepoint}")
                if not conn.in_transaction:
                    raise failed.exc  # SQLite rolled the whole transaction back
                error = failed.exc.error if isinstance(failed.exc, _Failure) else None
                if error is None:
                    error = _translate(conn, plan, failed.exc)
            except BaseException:
                # The transaction is gone, or cannot be trusted: roll it all back.
                return _all_failed(conn, plans, outcomes, timings, failed, index)
            timings.append(
                StepTiming(
                    failed.operation,
                    failed.collection,
                    SYSTEM,
                    failed.start,
                    _now(),
                    failed.rows,
                    type(error).__name__,
                )
            )
            outcomes.append((timings, error))
            continue
        outcomes.append((timings, None))
    start = _now()
    try:
        conn.commit()
    except BaseException as exc:
        _rollback(conn)  # even if every plan failed on its own: leave no transaction
        step = ("COMMIT", None, 0, start)
        return [
            (timings, error) if error is not None else _failed(conn, plan, timings, exc, step)
            for plan, (timings, error) in zip(plans, outcomes, strict=True)
        ]
    commit = StepTiming("COMMIT", None, SYSTEM, start, _now())
    for timings, error in outcomes:
        if error is None:
            timings.append(commit)
    return outcomes


def _all_failed(
    conn: sqlite3.Connection,
    plans: list[FlushPlan],
    outcomes: list[Outcome],
    timings: list[StepTiming],
    failed: _InStep,
    index: int,
) -> list[Outcome]:
    """The transaction was lost while writing ``plans[index]``: roll back; every plan failed."""
    step = (failed.operation, failed.collection, failed.rows, failed.start)
    this = _failed(conn, plans[index], timings, failed.exc, step)
    cause = this[1]
    assert cause is not None
    if not isinstance(cause, Exception):
        raise cause  # an interrupt travels on (the transaction is rolled back)
    what = "SQLite rolled back the transaction this commit shared"
    earlier: list[Outcome] = [
        (done, error) if error is not None else (done[:1], persistence_error(cause, what))
        for done, error in outcomes
    ]
    later: list[Outcome] = [([], persistence_error(cause, what)) for _ in plans[index + 1 :]]
    return [*earlier, this, *later]


def _outbox_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    values = list(row)
    for index in (7, 9, 10):  # next_attempt_at, created_at, published_at
        values[index] = _opt_timestamp(values[index])
    return tuple(values)


def _audit_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    values = list(row)
    values[8] = sqlite_timestamp(values[8])  # started_at
    return tuple(values)


def _state_version(conn: sqlite3.Connection, aggregate_type: str, aggregate_id: str) -> int:
    found = conn.execute(_STATE_VERSION, (aggregate_type, aggregate_id)).fetchone()
    return 0 if found is None else int(found[0])


def _translate(conn: sqlite3.Connection, plan: FlushPlan, exc: BaseException) -> BaseException:
    """The project's error for a driver error (best effort: a query that fails
    here leaves the plain :class:`PersistenceError`)."""
    if not isinstance(exc, Exception):
        return exc  # KeyboardInterrupt and the like travel unchanged
    try:
        found = _conflict(conn, plan, exc)
    except sqlite3.Error:
        found = None
    if found is not None:
        return found
    if isinstance(exc, sqlite3.Error):
        return persistence_error(exc, "SQLite flush failed")
    return exc


def _conflict(
    conn: sqlite3.Connection, plan: FlushPlan, exc: BaseException
) -> ConcurrencyError | None:
    if isinstance(exc, sqlite3.IntegrityError) and "events.version" in str(exc):
        # A (stream, version) clash the head check did not see (a writer that
        # bypassed it): name the first stream that is not where it was expected.
        for append in plan.streams.values():
            head = conn.execute(
                _STREAM_HEAD, (append.aggregate_type, append.aggregate_id)
            ).fetchone()
            actual = (head[0] if head else None) or 0
            if actual != append.expected_version:
                return concurrency_error(append.stream, append.expected_version, actual, exc)
    return None


def _waiting_job(
    conn: sqlite3.Connection, plan: FlushPlan, recorded_at: datetime, busy_ms: int
) -> tuple[list[StepTiming], BaseException | None]:
    """:func:`_flush_job` on the database thread of a writer whose busy timeout
    is 0 (it flushes inline): wait up to ``busy_ms`` for the write lock this once.
    Never raises."""
    try:
        conn.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
    except sqlite3.Error as exc:
        return _failed(conn, plan, [], exc, ("BEGIN", None, 0, _now()))
    try:
        return _flush_job(conn, plan, recorded_at)
    finally:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("PRAGMA busy_timeout=0")


_SYNCHRONOUS_WITHOUT_FSYNC = (0, 1)  # OFF, NORMAL: a WAL commit writes, never fsyncs


def _prepare(conn: sqlite3.Connection, mode: str) -> tuple[bool, int]:
    """Decide where this writer flushes; set its busy timeout to 0 if inline."""
    synchronous = conn.execute("PRAGMA synchronous").fetchone()[0]
    busy_ms = conn.execute("PRAGMA busy_timeout").fetchone()[0]
    journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    inline = mode == "loop" or (
        mode == "auto" and journal == "wal" and synchronous in _SYNCHRONOUS_WITHOUT_FSYNC
    )
    if inline:
        conn.execute("PRAGMA busy_timeout=0")
    return inline, int(busy_ms)


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
    keeps its own outcome (see :func:`_group_job`). The commit that finds no
    job running sends its own right away (a lone sender waits for nobody);
    if flushes queued meanwhile, a task goes on sending them.
    """

    __slots__ = (
        "__weakref__",
        "_busy_ms",
        "_drains",
        "_driver",
        "_fairy",
        "_inline",
        "_jobs",
        "_leading",
        "_loop",
        "_queue",
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

    @property
    def inline(self) -> bool:
        """Whether flushes run on the event loop's thread (decided when the writer opens)."""
        return self._inline

    def _idle(self) -> bool:
        jobs = self._jobs
        return jobs.sent == jobs.done and not self._leading

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
                outcomes = await self.execute(_group_job, conn, plans, utc_now(), busy_ms, box=box)
            elif self._inline:  # its busy timeout is 0: wait for the lock this once
                outcomes = [
                    await self.execute(
                        _waiting_job, conn, batch[0].plan, utc_now(), self._busy_ms, box=box
                    )
                ]
            else:
                outcomes = [await self.execute(_flush_job, conn, batch[0].plan, utc_now(), box=box)]
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
            return _waiting_job, (self._busy_ms,)
        return _flush_job, ()

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
            inline, busy_ms = await driver._execute(_prepare, driver._conn, mode)
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
        steps, error = _flush_job(conn, plan, recorded_at, wait=False)
        if error is not _BUSY:
            timings.extend(steps)
            if error is not None:
                raise error
            return True
        # Another process holds the write lock: wait for it on the thread.
    return await writer.commit_on_thread(plan, timings)
