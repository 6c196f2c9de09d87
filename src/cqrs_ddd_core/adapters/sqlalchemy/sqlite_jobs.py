"""SQLite: the jobs that write a flush on the writer's ``sqlite3`` connection.

Each job runs ``BEGIN IMMEDIATE``, the version checks, one ``executemany``
per table, the state updates and ``COMMIT`` (or ``ROLLBACK``) on the
underlying ``sqlite3`` connection, measures each step, and returns the steps
and the error that aborted it, already translated: a job never raises, and
it leaves the connection outside any transaction, so SQLAlchemy's view of it
stays true. Where a job runs (the aiosqlite thread, or inline on the event
loop) is :class:`~.sqlite.SQLiteWriter`'s business.

Versions are checked inside the write transaction, which holds SQLite's
write lock: a stream's head (``max(version)``, an index seek) must equal the
expected version, and a state row is updated only at the version it was
loaded at. A new stream (expected version 0) needs no query: its first row
is version 1, which the unique ``(aggregate_type, aggregate_id, version)``
key refuses if the stream exists; that key is the backstop for the rest.

:func:`group_job` writes several units of work in one transaction, each in a
savepoint of its own (group commit).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.dialects import sqlite as sqlite_dialect

from cqrs_ddd_core.adapters.sqlalchemy.errors import concurrency_error, persistence_error
from cqrs_ddd_core.adapters.sqlalchemy.plan import AUDIT_COLUMNS, OUTBOX_COLUMNS, as_utc
from cqrs_ddd_core.adapters.sqlalchemy.tables import aggregate_state, audit_log, events, outbox
from cqrs_ddd_core.exceptions import ConcurrencyError
from cqrs_ddd_core.persistence.records import StepTiming

if TYPE_CHECKING:
    from cqrs_ddd_core.adapters.sqlalchemy.plan import FlushPlan

__all__ = [
    "BUSY",
    "Outcome",
    "flush_job",
    "group_job",
    "passive_checkpoint",
    "prepare_writer",
    "sqlite_timestamp",
    "waiting_job",
]

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


BUSY = _Busy()

Outcome = tuple[list[StepTiming], BaseException | None]
"""A flush's measured steps and the error that aborted it (``None``: committed)."""


def write_plan(
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


def flush_job(
    conn: sqlite3.Connection, plan: FlushPlan, recorded_at: datetime, *, wait: bool = True
) -> Outcome:
    """Write ``plan`` in one transaction on ``conn``.

    Runs on the database thread, or inline on the event loop's (``wait=False``:
    the connection's busy timeout is 0, and if another connection holds the
    write lock the job gives up at once, having written nothing, and returns
    the ``BUSY`` marker so that the caller can wait for the lock on the
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
            return timings, BUSY
        return _failed(conn, plan, timings, exc, ("BEGIN", None, 0, start))
    timings.append(StepTiming("BEGIN", None, SYSTEM, start, _now()))
    try:
        write_plan(conn, plan, now_text, timings)
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


def group_job(
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
            write_plan(conn, plan, now_text, timings)
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


def waiting_job(
    conn: sqlite3.Connection, plan: FlushPlan, recorded_at: datetime, busy_ms: int
) -> tuple[list[StepTiming], BaseException | None]:
    """:func:`flush_job` on the database thread of a writer whose busy timeout
    is 0 (it flushes inline): wait up to ``busy_ms`` for the write lock this once.
    Never raises."""
    try:
        conn.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
    except sqlite3.Error as exc:
        return _failed(conn, plan, [], exc, ("BEGIN", None, 0, _now()))
    try:
        return flush_job(conn, plan, recorded_at)
    finally:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("PRAGMA busy_timeout=0")


_SYNCHRONOUS_WITHOUT_FSYNC = (0, 1)  # OFF, NORMAL: a WAL commit writes, never fsyncs


def prepare_writer(conn: sqlite3.Connection, mode: str) -> tuple[bool, int]:
    """Decide where this writer flushes: ``(inline, busy timeout in ms)``.

    Inline, its busy timeout is 0 and it never checkpoints the WAL as part of
    a commit (a checkpoint syncs the database file, milliseconds the event
    loop must not wait for): the writer runs :func:`passive_checkpoint` on its
    thread instead, every so many commits.
    """
    synchronous = conn.execute("PRAGMA synchronous").fetchone()[0]
    busy_ms = conn.execute("PRAGMA busy_timeout").fetchone()[0]
    journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    inline = mode == "loop" or (
        mode == "auto" and journal == "wal" and synchronous in _SYNCHRONOUS_WITHOUT_FSYNC
    )
    if inline:
        conn.execute("PRAGMA busy_timeout=0")
        conn.execute("PRAGMA wal_autocheckpoint=0")
    return inline, int(busy_ms)


def passive_checkpoint(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """Copy what the WAL holds into the database, waiting for nobody (what SQLite's
    own auto-checkpoint does after a commit): ``(busy, frames in the WAL, frames
    checkpointed)``. Run by the writer's connection with no write in between,
    it completes, and the next write starts the WAL over."""
    busy, frames, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(busy), int(frames), int(done)
