"""SQLite: the statements a flush runs and the code writing one plan's rows.

:func:`write_plan` writes a unit of work's rows in the transaction its job
opened (:mod:`.sqlite_jobs`, :mod:`.sqlite_batch`): the version checks, one
``executemany`` per table and the state updates, each step measured.

Versions are checked inside the write transaction, which holds SQLite's
write lock: a stream's head (``max(version)``, an index seek) must equal the
expected version, and a state row is updated only at the version it was
loaded at. A new stream (expected version 0) needs no query: its first row
is version 1, which the unique ``(aggregate_type, aggregate_id, version)``
key refuses if the stream exists; that key is the backstop for the rest.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.dialects import sqlite as sqlite_dialect

from cqrs_ddd_core.adapters.sqlalchemy.errors import concurrency_error
from cqrs_ddd_core.adapters.sqlalchemy.plan import AUDIT_COLUMNS, OUTBOX_COLUMNS, as_utc
from cqrs_ddd_core.adapters.sqlalchemy.tables import aggregate_state, audit_log, events, outbox
from cqrs_ddd_core.exceptions import ConcurrencyError
from cqrs_ddd_core.persistence.records import StepTiming

if TYPE_CHECKING:
    from cqrs_ddd_core.adapters.sqlalchemy.plan import FlushPlan, StateWrite

__all__ = [
    "EVENT_COLUMNS",
    "SYSTEM",
    "Failure",
    "InStep",
    "conflict_in",
    "now",
    "sqlite_timestamp",
    "write_plan",
]

SYSTEM = "sqlite"
now = time.time_ns

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
    """``value`` in UTC as SQLAlchemy's SQLite ``DATETIME`` stores it (sorts as text):
    ``YYYY-MM-DD HH:MM:SS.ffffff``."""
    global _second
    if value.tzinfo is not UTC:
        value = as_utc(value)
    # A command's timestamps (the event's, the outbox row's, the commit's)
    # nearly always share their second: its text is made once and kept (one
    # tuple, replaced whole, so threads never see half of it); only the
    # microseconds are formatted each time. Formatting the whole value, or
    # ``isoformat`` (which formats the UTC offset only for it to be cut off),
    # costs two to three times as much.
    key = (value.second, value.minute, value.hour, value.day, value.month, value.year)
    second = _second
    if second[0] != key:
        second = _second = (key, _SECOND % key[::-1])
    return f"{second[1]}{value.microsecond:06d}"


_SECOND = "%04d-%02d-%02d %02d:%02d:%02d."
# The last second sqlite_timestamp wrote, and its text.
_second: tuple[tuple[int, ...], str] = ((), "")


class Failure(Exception):
    """Carries a translated error out of the writing code."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class InStep(Exception):
    """What went wrong while writing a plan, and the step it went wrong in."""

    def __init__(
        self, exc: BaseException, operation: str, collection: str | None, rows: int, start: int
    ) -> None:
        super().__init__(str(exc))
        self.exc, self.operation, self.collection = exc, operation, collection
        self.rows, self.start = rows, start


def write_plan(
    conn: sqlite3.Connection, plan: FlushPlan, now_text: str, timings: list[StepTiming]
) -> None:
    """Write ``plan``'s rows in the open transaction, measuring each step.

    Raises:
        InStep: carrying the error (a :class:`Failure` for a version
            conflict found here, else the driver's) and the step it stopped.
    """
    operation, collection, rows, start = "INSERT", "events", len(plan.events), now()
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
                    raise Failure(ConcurrencyError(append.stream, append.expected_version, actual))
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
            timings.append(StepTiming(operation, collection, SYSTEM, start, now(), rows))

        if plan.outbox:
            operation, collection, rows, start = "INSERT", "outbox", len(plan.outbox), now()
            conn.executemany(_INSERT_OUTBOX, [_outbox_row(row) for row in plan.outbox])
            timings.append(StepTiming(operation, collection, SYSTEM, start, now(), rows))

        if plan.audit:
            operation, collection, rows, start = "INSERT", "audit_log", len(plan.audit), now()
            conn.executemany(_INSERT_AUDIT, [_audit_row(row) for row in plan.audit])
            timings.append(StepTiming(operation, collection, SYSTEM, start, now(), rows))

        inserts: list[StateWrite] = []
        updates: list[StateWrite] = []
        for write in plan.states.values():  # one pass (state_inserts/_updates: two)
            (updates if write.expected_version else inserts).append(write)
        if inserts:
            operation, collection, rows, start = "INSERT", "aggregate_state", len(inserts), now()
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
                    raise Failure(concurrency_error(write.stream, 0, actual, exc)) from exc
            timings.append(StepTiming(operation, collection, SYSTEM, start, now(), rows))
        if updates:
            operation, collection, rows, start = "UPDATE", "aggregate_state", len(updates), now()
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
                    raise Failure(ConcurrencyError(write.stream, write.expected_version, actual))
            timings.append(StepTiming(operation, collection, SYSTEM, start, now(), rows))
    except BaseException as exc:
        raise InStep(exc, operation, collection, rows, start) from exc


def _outbox_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    # next_attempt_at (7), created_at (9) and published_at (10) as stored text;
    # a new message has a created_at only.
    next_attempt_at, created_at, published_at = row[7], row[9], row[10]
    return (
        *row[:7],
        None if next_attempt_at is None else sqlite_timestamp(next_attempt_at),
        row[8],
        None if created_at is None else sqlite_timestamp(created_at),
        None if published_at is None else sqlite_timestamp(published_at),
        *row[11:],
    )


def _audit_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    values = list(row)
    values[8] = sqlite_timestamp(values[8])  # started_at
    return tuple(values)


def _state_version(conn: sqlite3.Connection, aggregate_type: str, aggregate_id: str) -> int:
    found = conn.execute(_STATE_VERSION, (aggregate_type, aggregate_id)).fetchone()
    return 0 if found is None else int(found[0])


def conflict_in(
    conn: sqlite3.Connection, plan: FlushPlan, exc: BaseException
) -> ConcurrencyError | None:
    """The stream a ``(stream, version)`` clash in ``plan`` was on, as a
    :class:`ConcurrencyError` (``None`` for any other error)."""
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
