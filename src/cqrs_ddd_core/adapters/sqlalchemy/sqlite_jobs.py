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
units of work in one transaction (group commit), each in a savepoint of its own
once one of them fails.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from datetime import datetime
from typing import TYPE_CHECKING

from cqrs_ddd_core.adapters.sqlalchemy.errors import persistence_error
from cqrs_ddd_core.adapters.sqlalchemy.sqlite_outcome import (
    InDoubtError,
    committed_before,
    outcome_after_failed_commit,
)
from cqrs_ddd_core.adapters.sqlalchemy.sqlite_thread import healthy
from cqrs_ddd_core.adapters.sqlalchemy.sqlite_write import (
    SYSTEM,
    Failure,
    InStep,
    conflict_in,
    now,
    sqlite_timestamp,
    write_plan,
)
from cqrs_ddd_core.exceptions import ConcurrencyError, CqrsDddError
from cqrs_ddd_core.persistence.records import StepTiming

if TYPE_CHECKING:
    from cqrs_ddd_core.adapters.sqlalchemy.plan import FlushPlan

__all__ = [
    "BUSY",
    "Outcome",
    "commit_failed",
    "commit_until",
    "failed_outcome",
    "flush_job",
    "healthy_in_transaction",
    "is_busy",
    "passive_checkpoint",
    "rollback",
    "settle_conflict",
    "stale_snapshot",
    "translate",
    "write_and_commit",
]


class _Busy(Exception):
    """Another connection holds the write lock and this job may not wait for it."""


BUSY = _Busy()

Outcome = tuple[list[StepTiming], BaseException | None]
"""A flush's measured steps and the error that aborted it (``None``: committed)."""


def rollback(conn: sqlite3.Connection) -> None:
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


def failed_outcome(
    conn: sqlite3.Connection,
    plan: FlushPlan,
    timings: list[StepTiming],
    exc: BaseException,
    step: tuple[str, str | None, int, int],
) -> Outcome:
    """Roll back, translate ``exc`` and record the step it stopped (as failed);
    a unit of work met by its own committed rows ends without an error."""
    end = now()
    rollback(conn)
    error: BaseException | None = (
        exc.error if isinstance(exc, Failure) else translate(conn, plan, exc)
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
    end = now()
    still_open = is_busy(exc) and healthy_in_transaction(conn)
    rollback(conn)
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
            time.sleep(0.001)  # (a connection whose busy timeout is 0 would spin)


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
    start = now()
    try:
        conn.execute("BEGIN IMMEDIATE")
    except BaseException as exc:
        if not wait and is_busy(exc):
            stale_snapshot(conn, exc)  # (closed: the thread opens a fresh one)
            return timings, BUSY
        return failed_outcome(conn, plan, timings, exc, ("BEGIN", None, 0, start))
    timings.append(StepTiming("BEGIN", None, SYSTEM, start, now()))
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
    except InStep as failed:
        step = (failed.operation, failed.collection, failed.rows, failed.start)
        return failed_outcome(conn, plan, timings, failed.exc, step)
    start = now()
    try:
        if deadline is None:
            conn.commit()  # (what commit_until does without a deadline)
        else:
            commit_until(conn, deadline)
    except BaseException as exc:
        return commit_failed(conn, plan, timings, exc, start)
    timings.append(StepTiming("COMMIT", None, SYSTEM, start, now()))
    return timings, None


def translate(conn: sqlite3.Connection, plan: FlushPlan, exc: BaseException) -> BaseException:
    """The project's error for a driver error (best effort: a query that fails
    here leaves the plain :class:`PersistenceError`)."""
    if not isinstance(exc, Exception) or isinstance(exc, CqrsDddError):
        return exc  # KeyboardInterrupt and the project's own errors travel unchanged
    try:
        found = conflict_in(conn, plan, exc)
    except sqlite3.Error:
        found = None
    if found is not None:
        return found
    # Any other error (the driver's, a value it cannot bind such as a lone
    # surrogate, a bug): a PersistenceError, the cause chained; never raw.
    return persistence_error(exc, "SQLite flush failed")


def passive_checkpoint(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """Copy what the WAL holds into the database, waiting for nobody (what SQLite's
    own auto-checkpoint does after a commit): ``(busy, frames in the WAL, frames
    checkpointed)``. Run by the writer's connection with no write in between,
    it completes, and the next write starts the WAL over."""
    busy, frames, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(busy), int(frames), int(done)
