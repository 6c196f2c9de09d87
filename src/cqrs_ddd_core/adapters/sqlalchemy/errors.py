"""Driver errors become the project's errors at the adapter edge.

* :class:`ConcurrencyError` (stream, expected and actual version, the actual
  one queried after the failure): a (stream, version) clash (``23505`` on
  ``uq_events_stream_version``), a stale or duplicate state row (``23505`` on
  ``pk_aggregate_state``), a failed version check (``22P02`` carrying
  :data:`CONFLICT_MARKER`), a deadlock or serialization failure (``40P01``,
  ``40001``); on SQLite the checks run in the write transaction itself.
* :class:`PersistenceError`: another unique clash (an outbox message id
  stored twice), any other database error.
* An event id stored already (``23505`` on :data:`EVENT_ID_CONSTRAINT`) is
  not an error by itself: the unit of work may have committed before (see
  "Commit outcomes" in ``docs/persistence.md``); the adapter looks its event
  ids up and decides.
* A lost connection (:func:`is_connection_lost`: SQLSTATE class ``08``, an
  administrator's shutdown ``57P01``-``57P03``, or no SQLSTATE at all) says
  nothing about what the server did: the adapter finds out, and raises
  :class:`~cqrs_ddd_core.exceptions.CommitOutcomeUnknownError` when it cannot.

The driver's error is kept as ``__cause__``.
"""

from __future__ import annotations

from cqrs_ddd_core.exceptions import ConcurrencyError, PersistenceError

__all__ = [
    "CONFLICT_MARKER",
    "EVENT_ID_CONSTRAINT",
    "concurrency_error",
    "is_concurrency_signal",
    "is_connection_lost",
    "is_replayed_event",
    "persistence_error",
    "sqlstate",
]

CONFLICT_MARKER = "cqrs_ddd_version_conflict"
"""Text a PostgreSQL flush fails on when a version check finds a conflict
(see :mod:`cqrs_ddd_core.adapters.sqlalchemy.postgres`)."""

EVENT_ID_CONSTRAINT = "uq_events_event_id"
"""The unique constraint on ``events.event_id`` (see :mod:`.tables`)."""

_CONCURRENCY_STATES = frozenset({"40P01", "40001"})
# The server ended the session (admin shutdown, crash shutdown, cannot connect now).
_SESSION_ENDED_STATES = frozenset({"57P01", "57P02", "57P03"})
_VERSIONED_CONSTRAINTS = frozenset({"uq_events_stream_version", "pk_aggregate_state"})


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of an asyncpg error (None for anything else)."""
    code = getattr(exc, "sqlstate", None)
    return code if isinstance(code, str) else None


def is_concurrency_signal(exc: BaseException) -> bool:
    """True when a PostgreSQL error means another writer got there first."""
    code = sqlstate(exc)
    if code == "23505":
        return getattr(exc, "constraint_name", None) in _VERSIONED_CONSTRAINTS
    if code == "22P02":
        return CONFLICT_MARKER in str(exc)
    return code in _CONCURRENCY_STATES


def is_connection_lost(exc: BaseException) -> bool:
    """True when ``exc`` says nothing about what the server did with a statement.

    SQLSTATE class ``08`` (connection exception, asyncpg's
    ``ConnectionDoesNotExistError`` among them) and ``57P01``-``57P03`` (the
    server ended the session) are not the server refusing the statement: it
    may have run, and committed. So is any error without a SQLSTATE (a reset
    socket, a timeout, a closed connection), except a value that could not
    be encoded (``ValueError``/``TypeError``: it was never sent).
    """
    code = sqlstate(exc)
    if code is not None:
        return code.startswith("08") or code in _SESSION_ENDED_STATES
    return not isinstance(exc, (ValueError, TypeError))


def is_replayed_event(exc: BaseException) -> bool:
    """True when ``exc`` is a clash on :data:`EVENT_ID_CONSTRAINT` (an event id stored already)."""
    return sqlstate(exc) == "23505" and getattr(exc, "constraint_name", None) == EVENT_ID_CONSTRAINT


def concurrency_error(
    stream: str, expected: int, actual: int | None, cause: BaseException | None
) -> ConcurrencyError:
    """A :class:`ConcurrencyError` whose ``__cause__`` is the driver's error."""
    error = ConcurrencyError(stream, expected, actual)
    error.__cause__ = cause
    return error


def persistence_error(exc: BaseException, what: str) -> PersistenceError:
    """A :class:`PersistenceError` naming what failed, caused by ``exc``."""
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    error = PersistenceError(f"{what}: {detail}")
    error.__cause__ = exc
    return error
