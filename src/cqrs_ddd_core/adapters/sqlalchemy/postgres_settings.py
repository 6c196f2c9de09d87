"""PostgreSQL time limits: how long a connection, a statement and a commit may take.

Set by :func:`~cqrs_ddd_core.adapters.sqlalchemy.create_engine` (all of them
overridable there); the defaults bound every wait of a commit:

* ``postgres_connect_timeout`` (10 s): opening a connection (asyncpg's
  ``timeout``), so a server that accepts and never answers fails the commit
  instead of holding it.
* ``postgres_statement_timeout`` (30 s): PostgreSQL's ``statement_timeout``
  for every session of the engine (``None`` leaves the server's setting):
  the server cancels a statement that runs longer (waiting for a lock
  included), and nothing of it is written.
* ``postgres_commit_timeout`` (40 s): the longest a commit waits for its
  statement's answer, connection checkout included, *client side*, so that a
  frozen server or network cannot hold it. Past it the connection is dropped
  and the outcome is looked up.
* ``postgres_resolve_timeout`` (10 s): the longest that look-up may take
  (reconnect, end the old server process, look the event ids up) before the
  commit is reported as :class:`~cqrs_ddd_core.exceptions.CommitOutcomeUnknownError`.
* ``postgres_commit_queue`` (10,000): commits waiting in the group-commit
  queue at most. One more waits for room, within its commit timeout; past
  it, it fails with :class:`~cqrs_ddd_core.exceptions.PersistenceError`
  (nothing of it was sent).

A caller's own deadline (``asyncio.wait_for``, a cancelled task) is honoured
sooner: see "Commit outcomes" in ``docs/persistence.md``.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cqrs_ddd_core.exceptions import ConfigurationError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "COMMIT_QUEUE_OPTION",
    "COMMIT_TIMEOUT_OPTION",
    "DEFAULT_COMMIT_QUEUE",
    "DEFAULT_COMMIT_TIMEOUT",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_RESOLVE_TIMEOUT",
    "DEFAULT_STATEMENT_TIMEOUT",
    "RESOLVE_TIMEOUT_OPTION",
    "PostgresSettings",
    "check_seconds",
    "settings_of",
]

COMMIT_TIMEOUT_OPTION = "postgres_commit_timeout"
RESOLVE_TIMEOUT_OPTION = "postgres_resolve_timeout"
COMMIT_QUEUE_OPTION = "postgres_commit_queue"
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_STATEMENT_TIMEOUT: float | None = 30.0
DEFAULT_COMMIT_TIMEOUT = 40.0
DEFAULT_RESOLVE_TIMEOUT = 10.0
DEFAULT_COMMIT_QUEUE = 10_000


@dataclass(frozen=True, slots=True)
class PostgresSettings:
    """The client-side limits of one engine's commits."""

    commit_timeout: float = DEFAULT_COMMIT_TIMEOUT
    resolve_timeout: float = DEFAULT_RESOLVE_TIMEOUT
    commit_queue: int = DEFAULT_COMMIT_QUEUE


def check_seconds(name: str, value: object, *, optional: bool = False) -> None:
    """Raise :class:`ConfigurationError` unless ``value`` is a positive, finite number
    of seconds (or ``None`` when ``optional``)."""
    if value is None and optional:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigurationError(f"{name} must be a positive number of seconds, got {value!r}")


_settings: weakref.WeakKeyDictionary[Engine, PostgresSettings] = weakref.WeakKeyDictionary()


def settings_of(engine: AsyncEngine) -> PostgresSettings:
    """The limits set on ``engine`` (the defaults for an engine made elsewhere)."""
    sync_engine = engine.sync_engine
    found = _settings.get(sync_engine)
    if found is None:
        options = engine.get_execution_options()
        found = _settings[sync_engine] = PostgresSettings(
            float(options.get(COMMIT_TIMEOUT_OPTION, DEFAULT_COMMIT_TIMEOUT)),
            float(options.get(RESOLVE_TIMEOUT_OPTION, DEFAULT_RESOLVE_TIMEOUT)),
            int(options.get(COMMIT_QUEUE_OPTION, DEFAULT_COMMIT_QUEUE)),
        )
    return found
