"""Driver errors become the project's errors at the adapter edge.

* :class:`ConcurrencyError` (stream, expected and actual version, the actual
  one queried after the failure): a (stream, version) clash (``23505`` on
  ``uq_events_stream_version``), a stale or duplicate state row (``23505`` on
  ``pk_aggregate_state``), a failed version check (``22P02`` carrying
  :data:`CONFLICT_MARKER`), a deadlock or serialization failure (``40P01``,
  ``40001``); on SQLite the checks run in the write transaction itself.
* :class:`PersistenceError`: another unique clash (an event id or outbox
  message id stored twice), any other database error, a lost connection.

The driver's error is kept as ``__cause__``.
"""

from __future__ import annotations

from cqrs_ddd_core.exceptions import ConcurrencyError, PersistenceError

__all__ = [
    "CONFLICT_MARKER",
    "concurrency_error",
    "is_concurrency_signal",
    "persistence_error",
    "sqlstate",
]

CONFLICT_MARKER = "cqrs_ddd_version_conflict"
"""Text a PostgreSQL flush fails on when a version check finds a conflict
(see :mod:`cqrs_ddd_core.adapters.sqlalchemy.postgres`)."""

_CONCURRENCY_STATES = frozenset({"40P01", "40001"})
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
