"""SQLite: what a failed write really did, found by looking its event ids up.

Two questions are answered here, on failure paths only (the happy path pays
nothing):

* **Was this unit of work committed before?** (idempotent commits). A unit
  of work sent again after an unknown outcome carries the same event ids. Its
  first clash (the unique ``events.event_id`` key, a stream head that moved,
  the unique ``(stream, version)`` key) leads here: if *all* its event ids
  are stored, it was committed before and nothing of it is written again; if
  *some* are, another unit of work holds part of them: a
  :class:`ConcurrencyError` naming the stream. A unit of work without events
  cannot be recognised.
* **Did a failed ``COMMIT`` commit?** When ``COMMIT`` itself fails (a disk
  error, a connection gone) the transaction may or may not be in the file.
  The writer rolls back what is left, then looks the event ids up, on the
  same connection if it is still sound, else on a fresh one (the writer
  thread discards a connection it cannot trust). Found: committed. Absent:
  refused, the cause chained. The look-up itself fails, or there are no
  event ids to look up: :class:`CommitOutcomeUnknownError`, carrying the
  command's message id and the event ids.
"""

from __future__ import annotations

import sqlite3

from cqrs_ddd_core.adapters.sqlalchemy.errors import concurrency_error, persistence_error
from cqrs_ddd_core.adapters.sqlalchemy.plan import FlushPlan, StreamAppend
from cqrs_ddd_core.exceptions import CommitOutcomeUnknownError, ConcurrencyError

__all__ = [
    "InDoubtError",
    "committed_before",
    "message_id_of",
    "outcome_after_failed_commit",
    "stored_event_ids",
    "unknown_outcome",
]

_CHUNK = 500  # SQLite's default limit of host parameters is 32,766; stay far below it


class InDoubtError(Exception):
    """A ``COMMIT`` failed and its connection could not tell what it did: the
    writer looks the event ids up on a fresh connection (:func:`outcome_after_failed_commit`).

    Attributes:
        cause: The error ``COMMIT`` raised.
    """

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def stored_event_ids(conn: sqlite3.Connection, event_ids: list[str]) -> int:
    """How many of ``event_ids`` the events table holds (as ``conn`` sees it)."""
    found = 0
    for start in range(0, len(event_ids), _CHUNK):
        chunk = event_ids[start : start + _CHUNK]
        marks = ",".join("?" * len(chunk))
        row = conn.execute(
            f"SELECT count(*) FROM events WHERE event_id IN ({marks})", chunk
        ).fetchone()
        found += int(row[0])
    return found


def _event_ids(plan: FlushPlan) -> list[str]:
    return [event.event_id for event in plan.events]


def _stored_streams(conn: sqlite3.Connection, event_ids: list[str]) -> dict[str, tuple[str, str]]:
    """The stream each stored one of ``event_ids`` is in."""
    stored: dict[str, tuple[str, str]] = {}
    for start in range(0, len(event_ids), _CHUNK):
        chunk = event_ids[start : start + _CHUNK]
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            "SELECT event_id, aggregate_type, aggregate_id FROM events"
            f" WHERE event_id IN ({marks})",
            chunk,
        ).fetchall()
        stored.update({row[0]: (row[1], row[2]) for row in rows})
    return stored


def committed_before(conn: sqlite3.Connection, plan: FlushPlan) -> bool | ConcurrencyError:
    """After a clash: ``True`` if every event of ``plan`` is stored already, each
    in the stream ``plan`` appends it to (the unit of work was committed
    before), a :class:`ConcurrencyError` if only some are, ``False`` if none
    are, one is stored in another stream (a duplicate id, not a replay: the
    caller keeps its error), or ``plan`` has no events.

    Raises:
        sqlite3.Error: the look-up failed (the caller keeps the original error).
    """
    ids = _event_ids(plan)
    if not ids:
        return False
    verdict = plan.replay_verdict(_stored_streams(conn, ids))
    if not isinstance(verdict, StreamAppend):
        return verdict is not None  # "replayed": committed before
    # Part of this unit of work's events are stored: another unit of work
    # (a different command reusing ids, or a retry that changed) got there.
    head = conn.execute(
        "SELECT max(version) FROM events WHERE aggregate_type = ? AND aggregate_id = ?",
        (verdict.aggregate_type, verdict.aggregate_id),
    ).fetchone()
    actual = (head[0] if head else None) or 0
    return concurrency_error(verdict.stream, verdict.expected_version, actual, None)


def message_id_of(plan: FlushPlan) -> str | None:
    """The id of the command whose writes ``plan`` holds, when it says so:
    its audit row's message id, else its events' causation id."""
    if plan.audit:
        return str(plan.audit[0][1])
    for event in plan.events:
        if event.causation_id:
            return event.causation_id
    return None


def unknown_outcome(plan: FlushPlan, cause: BaseException) -> CommitOutcomeUnknownError:
    """The error for a commit whose outcome could not be learnt (cause chained)."""
    detail = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    ids = _event_ids(plan)
    how = "looking its event ids up failed too" if ids else "it carries no event ids to look up"
    error = CommitOutcomeUnknownError(
        f"SQLite COMMIT failed ({detail}) and {how}: the commit may or may not be stored",
        message_id=message_id_of(plan),
        event_ids=ids,
    )
    error.__cause__ = cause
    return error


def outcome_after_failed_commit(
    conn: sqlite3.Connection, plan: FlushPlan, cause: BaseException
) -> BaseException | None:
    """What a failed ``COMMIT`` did, with no transaction open on ``conn``:
    ``None`` (its events are stored: it committed), the refusal (none are:
    a :class:`PersistenceError` caused by ``cause``), or
    :class:`CommitOutcomeUnknownError` (no events to look up, a partial
    answer, or the look-up failed)."""
    ids = _event_ids(plan)
    if not ids:
        return unknown_outcome(plan, cause)
    try:
        found = stored_event_ids(conn, ids)
    except sqlite3.Error:
        return unknown_outcome(plan, cause)
    if found == len(set(ids)):
        return None
    if found == 0:
        return persistence_error(cause, "SQLite COMMIT failed; nothing was stored")
    return unknown_outcome(plan, cause)
