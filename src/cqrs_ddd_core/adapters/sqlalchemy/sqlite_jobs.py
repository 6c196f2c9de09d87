"""SQLite: the jobs that write a flush on the writer's ``sqlite3`` connection.

Each job runs ``BEGIN IMMEDIATE``, the version checks, one ``executemany``
per table, the state updates and ``COMMIT`` (or ``ROLLBACK``) on the
writer's own stdlib ``sqlite3`` connection, measures each step, and returns
the steps and the error that aborted it, already translated (every error is
a :class:`PersistenceError` or a subclass, the driver's error chained): a
job never raises, and it leaves the connection outside any transaction (if
even ``ROLLBACK`` fails, the writer discards the connection). Where a job
runs (the writer's thread, or inline on the event loop) is
:class:`~.sqlite.SQLiteWriter`'s business.

Versions are checked inside the write transaction, which holds SQLite's
write lock: a stream's head (``max(version)``, an index seek) must equal the
expected version, and a state row is updated only at the version it was
loaded at. A new stream (expected version 0) needs no query: its first row
is version 1, which the unique ``(aggregate_type, aggregate_id, version)``
key refuses if the stream exists; that key is the backstop for the rest.

A clash (a version conflict, an event id stored already) is checked against
the unit of work's own event ids before it is reported: a unit of work
committed before ends without error and writes nothing
(:mod:`.sqlite_outcome`). :func:`.sqlite_batch.batch_job` writes several
units of work in one transaction, each in a savepoint of its own (group commit).
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
from cqrs_ddd_core.adapters.sqlalchemy.sqlite_outcome import (
    InDoubtError,
    committed_before,
    outcome_after_failed_commit,
)
from cqrs_ddd_core.adapters.sqlalchemy.sqlite_thread import healthy
from cqrs_ddd_core.adapters.sqlalchemy.tables import aggregate_state, audit_log, events, outbox
from cqrs_ddd_core.exceptions import ConcurrencyError, CqrsDddError
from cqrs_ddd_core.persistence.records import StepTiming

if TYPE_CHECKING:
    from cqrs_ddd_core.adapters.sqlalchemy.plan import FlushPlan

__all__ = [
    "BUSY",
    "SYSTEM",
    "Outcome",
    "commit_failed",
    "commit_until",
    "flush_job",
    "is_busy",
    "passive_checkpoint",
    "settle_conflict",
    "sqlite_timestamp",
    "stale_snapshot",
    "write_and_commit",
    "write_plan",
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
    """Roll back if a transaction is open; best effort (the original error is what
    matters). If it fails, the connection stays inside the transaction and the
    writer discards it after the job (see :mod:`.sqlite_thread`): never reused."""
    with contextlib.suppress(sqlite3.Error):  # a closed connection raises even on the check
        if conn.in_transaction:
            conn.rollback()


def is_busy(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite's "another connection holds the lock" (extended codes too)."""
    return (
        isinstance(exc, sqlite3.OperationalError)
        and getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY
    )


def stale_snapshot(conn: sqlite3.Connection, exc: BaseException) -> bool:
    """``BEGIN IMMEDIATE`` was refused because ``conn`` itself still reads an old
    snapshot (a statement left unfinished holds it; ``SQLITE_BUSY_SNAPSHOT``):
    waiting can never help. Close ``conn`` (the writer then discards it and
    opens a fresh one) and say so."""
    if getattr(exc, "sqlite_errorcode", 0) != sqlite3.SQLITE_BUSY_SNAPSHOT:
        return False
    with contextlib.suppress(sqlite3.Error):
        conn.close()
    return True


def settle_conflict(
    conn: sqlite3.Connection, plan: FlushPlan, error: BaseException
) -> BaseException | None:
    """A clash may be this unit of work meeting its own rows, committed before
    (idempotent commits, :func:`.sqlite_outcome.committed_before`): ``None`` if
    so (nothing written now), else the error to report."""
    if not (isinstance(error, ConcurrencyError) or _is_event_id_clash(error)):
        return error
    try:
        found = committed_before(conn, plan)
    except sqlite3.Error:
        return error
    if found is True:
        return None
    return found or error


def _is_event_id_clash(error: BaseException) -> bool:
    cause = error.__cause__
    return isinstance(cause, sqlite3.IntegrityError) and "events.event_id" in str(cause)


def _failed(
    conn: sqlite3.Connection,
    plan: FlushPlan,
    timings: list[StepTiming],
    exc: BaseException,
    step: tuple[str, str | None, int, int],
) -> Outcome:
    """Roll back, translate ``exc`` and record the step it stopped (as failed);
    a unit of work met by its own committed rows ends without an error."""
    end = _now()
    _rollback(conn)
    error: BaseException | None = (
        exc.error if isinstance(exc, _Failure) else _translate(conn, plan, exc)
    )
    if error is not None and healthy(conn):
        error = settle_conflict(conn, plan, error)
    operation, collection, rows, start = step
    kind = None if error is None else type(error).__name__
    timings.append(StepTiming(operation, collection, SYSTEM, start, end, rows, kind))
    return timings, error


def commit_failed(
    conn: sqlite3.Connection,
    plan: FlushPlan,
    timings: list[StepTiming],
    exc: BaseException,
    start: int,
) -> Outcome:
    """``COMMIT`` raised: find out what it did.

    Busy (the transaction is still open, SQLite says so): rolled back, refused.
    Otherwise the outcome is in doubt: roll back what is left and look the
    event ids up on this connection if it is sound
    (:func:`.sqlite_outcome.outcome_after_failed_commit`), or hand the
    question to the writer (:class:`.sqlite_outcome.InDoubtError`), which
    asks on a fresh connection.
    """
    end = _now()
    still_open = is_busy(exc) and healthy_in_transaction(conn)
    _rollback(conn)
    error: BaseException | None
    if still_open:
        error = persistence_error(exc, "SQLite COMMIT failed; nothing was stored")
    elif not isinstance(exc, Exception):
        error = exc  # an interrupt travels on
    elif healthy(conn):
        error = outcome_after_failed_commit(conn, plan, exc)
    else:
        error = InDoubtError(exc)
    kind = None if error is None else type(error).__name__
    timings.append(StepTiming("COMMIT", None, SYSTEM, start, end, 0, kind))
    return timings, error


def commit_until(conn: sqlite3.Connection, deadline: float | None) -> None:
    """``COMMIT``; while it is busy (a rollback journal waiting for readers) and the
    transaction is still open, try again until ``deadline``."""
    while True:
        try:
            conn.commit()
            return
        except sqlite3.OperationalError as exc:
            if (
                deadline is None
                or not is_busy(exc)
                or time.monotonic() >= deadline
                or not healthy_in_transaction(conn)
            ):
                raise


def healthy_in_transaction(conn: sqlite3.Connection) -> bool:
    """Whether ``conn`` is open and inside a transaction."""
    try:
        return conn.in_transaction
    except sqlite3.Error:
        return False


def flush_job(
    conn: sqlite3.Connection, plan: FlushPlan, recorded_at: datetime, *, wait: bool = True
) -> Outcome:
    """Write ``plan`` in one transaction on ``conn``.

    Runs inline on the event loop's thread (``wait=False``: the connection's
    busy timeout is 0, and if another connection holds the write lock the job
    gives up at once, having written nothing, and returns the ``BUSY`` marker
    so that the caller can wait for the lock on the writer's thread instead),
    or on the thread through :func:`.sqlite_batch.batch_job`.

    Returns the measured steps and the error that aborted the transaction
    (already rolled back and translated), if any. Never raises.
    """
    timings: list[StepTiming] = []
    now_text = sqlite_timestamp(recorded_at)
    start = _now()
    try:
        conn.execute("BEGIN IMMEDIATE")
    except BaseException as exc:
        if not wait and is_busy(exc):
            stale_snapshot(conn, exc)  # (closed: the thread opens a fresh one)
            return timings, BUSY
        return _failed(conn, plan, timings, exc, ("BEGIN", None, 0, start))
    timings.append(StepTiming("BEGIN", None, SYSTEM, start, _now()))
    return write_and_commit(conn, plan, now_text, timings)


def write_and_commit(
    conn: sqlite3.Connection,
    plan: FlushPlan,
    now_text: str,
    timings: list[StepTiming],
    deadline: float | None = None,
) -> Outcome:
    """Write ``plan`` in the transaction just begun and commit it (a busy
    ``COMMIT`` is tried again until ``deadline``). Never raises."""
    try:
        write_plan(conn, plan, now_text, timings)
    except _InStep as failed:
        step = (failed.operation, failed.collection, failed.rows, failed.start)
        return _failed(conn, plan, timings, failed.exc, step)
    start = _now()
    try:
        commit_until(conn, deadline)
    except BaseException as exc:
        return commit_failed(conn, plan, timings, exc, start)
    timings.append(StepTiming("COMMIT", None, SYSTEM, start, _now()))
    return timings, None


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
    if not isinstance(exc, Exception) or isinstance(exc, CqrsDddError):
        return exc  # KeyboardInterrupt and the project's own errors travel unchanged
    try:
        found = _conflict(conn, plan, exc)
    except sqlite3.Error:
        found = None
    if found is not None:
        return found
    # Any other error (the driver's, a value it cannot bind such as a lone
    # surrogate, a bug): a PersistenceError, the cause chained; never raw.
    return persistence_error(exc, "SQLite flush failed")


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


def passive_checkpoint(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """Copy what the WAL holds into the database, waiting for nobody (what SQLite's
    own auto-checkpoint does after a commit): ``(busy, frames in the WAL, frames
    checkpointed)``. Run by the writer's connection with no write in between,
    it completes, and the next write starts the WAL over."""
    busy, frames, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(busy), int(frames), int(done)
