"""Engines for the SQL adapters: SQLite (aiosqlite) and PostgreSQL (asyncpg).

:func:`create_engine` accepts the URLs people type (``sqlite:///app.db``,
``postgresql://user@host/db``) and picks the async driver. On SQLite every
connection runs in WAL mode (readers never wait for the writer) with the
``synchronous`` level you choose, durable ``FULL`` by default, and a busy
timeout so that writers from other processes wait instead of failing.

Any ``AsyncEngine`` works with the adapters; this factory only sets what the
adapters' promises rely on.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cqrs_ddd_core.adapters.sqlalchemy.postgres_group import (
    BATCH_OPTION,
    DEFAULT_BATCH,
    DEFAULT_IN_FLIGHT,
    IN_FLIGHT_OPTION,
    LINGER_OPTION,
    GroupCommitter,
)
from cqrs_ddd_core.adapters.sqlalchemy.postgres_notify import (
    DEFAULT_NOTIFY_TIMEOUT,
    NOTIFY_TIMEOUT_OPTION,
)
from cqrs_ddd_core.adapters.sqlalchemy.postgres_outcome import remember_backend
from cqrs_ddd_core.adapters.sqlalchemy.postgres_settings import (
    COMMIT_QUEUE_OPTION,
    COMMIT_TIMEOUT_OPTION,
    DEFAULT_COMMIT_QUEUE,
    DEFAULT_COMMIT_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_RESOLVE_TIMEOUT,
    DEFAULT_STATEMENT_TIMEOUT,
    RESOLVE_TIMEOUT_OPTION,
    check_seconds,
)
from cqrs_ddd_core.adapters.sqlalchemy.sqlite import FLUSH_MODE_OPTION, SQLiteFlushMode
from cqrs_ddd_core.exceptions import ConfigurationError
from cqrs_ddd_core.extras import require

__all__ = ["SQLiteFlushMode", "SQLiteSynchronous", "create_engine", "dialect_name"]

SQLiteSynchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]
"""SQLite's ``PRAGMA synchronous`` levels. In WAL mode ``NORMAL`` never corrupts
the database but may lose the last transactions on power loss; ``FULL`` (the
default here) loses nothing that committed."""

_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}


def dialect_name(engine: AsyncEngine) -> str:
    """``"sqlite"`` or ``"postgresql"``; raises for any other database."""
    name = engine.dialect.name
    if name not in ("sqlite", "postgresql"):
        raise ConfigurationError(
            f"The SQL adapters support SQLite and PostgreSQL, not {name!r} ({engine.url!r})"
        )
    if engine.dialect.driver not in ("aiosqlite", "asyncpg"):
        raise ConfigurationError(
            f"The SQL adapters need the aiosqlite or asyncpg driver, not "
            f"{engine.dialect.driver!r}: use a sqlite+aiosqlite:// or postgresql+asyncpg:// URL"
        )
    return name


def create_engine(
    url: str | URL,
    *,
    sqlite_synchronous: SQLiteSynchronous = "FULL",
    sqlite_busy_timeout: float = 30.0,
    sqlite_flush: SQLiteFlushMode = "auto",
    postgres_commit_batch: int = DEFAULT_BATCH,
    postgres_commits_in_flight: int = DEFAULT_IN_FLIGHT,
    postgres_commit_linger: float = 0.0,
    postgres_connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    postgres_statement_timeout: float | None = DEFAULT_STATEMENT_TIMEOUT,
    postgres_commit_timeout: float = DEFAULT_COMMIT_TIMEOUT,
    postgres_resolve_timeout: float = DEFAULT_RESOLVE_TIMEOUT,
    postgres_commit_queue: int = DEFAULT_COMMIT_QUEUE,
    postgres_notify_timeout: float = DEFAULT_NOTIFY_TIMEOUT,
    echo: bool = False,
    pool_size: int | None = None,
) -> AsyncEngine:
    """An ``AsyncEngine`` configured for the adapters.

    Args:
        url: ``sqlite:///path.db`` or ``postgresql://user:pw@host:port/db``
            (the async driver is chosen for you; explicit
            ``sqlite+aiosqlite`` / ``postgresql+asyncpg`` URLs work too).
        sqlite_synchronous: SQLite's ``PRAGMA synchronous``. ``FULL`` is
            durable; ``NORMAL`` is faster and, in WAL mode, may lose the
            last commits on power loss but never corrupts the file.
        sqlite_busy_timeout: The SQLite commit deadline for the write lock:
            a commit waits for another process's lock until this many
            seconds after it was sent, then fails with a
            ``PersistenceError`` ("database is locked"), nothing written.
            A caller that cancels earlier gets control back at once.
        sqlite_flush: Where a SQLite commit's writes run: ``"auto"`` (inline
            on the event loop's thread when the commit does not fsync, i.e.
            ``synchronous`` ``NORMAL`` or ``OFF``; when it does, the rows
            inline and the ``COMMIT`` on the writer's own thread),
            ``"thread"`` or ``"loop"`` (everything, always). Inline never
            waits for another process's write lock on the loop: such a
            commit moves to the thread. Stored as the engine's
            ``sqlite_flush`` execution option.
        postgres_commit_batch: PostgreSQL group commit: at most this many
            concurrent commits share one statement (1: each commit alone).
            Each keeps its own outcome; see :mod:`.postgres_group`.
        postgres_commits_in_flight: PostgreSQL: statements sent at once
            before further commits wait to be grouped.
        postgres_commit_linger: PostgreSQL: seconds a commit made less than
            this long after the previous one waits for more to share its
            statement (0, the default: none). Fewer, larger statements at
            high rates (less CPU per commit, here and on the server) for
            this much more latency per commit at most; a commit after a
            quiet spell goes at once. See :mod:`.postgres_group`.
        postgres_connect_timeout: PostgreSQL: seconds to open a connection.
        postgres_statement_timeout: PostgreSQL's ``statement_timeout`` in
            seconds for every session of the engine (``None``: the server's).
        postgres_commit_timeout: PostgreSQL: seconds a commit waits for its
            statement's answer, client side, checkout included; then its
            outcome is looked up.
        postgres_resolve_timeout: PostgreSQL: seconds that look-up may take
            before the commit is reported as ``CommitOutcomeUnknownError``.
        postgres_commit_queue: PostgreSQL: commits waiting in the group-commit
            queue at most (one more waits for room within its commit timeout).
            See :mod:`.postgres_settings` for all the limits.
        postgres_notify_timeout: PostgreSQL: seconds a round of wake-ups
            (``NOTIFY`` after commits, for relays and projection runners) may
            take; a late one is logged and dropped, never the commit's
            concern (:mod:`.postgres_notify`).
        echo: Log every statement (SQLAlchemy's ``echo``).
        pool_size: Connections kept in the pool (SQLAlchemy's default when None).

    Raises:
        ConfigurationError: the URL is neither SQLite nor PostgreSQL, or names
            an in-memory SQLite database (use the in-memory adapters instead).
    """
    parsed = make_url(url)
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ConfigurationError(
            f"Unsupported database URL {parsed.render_as_string(hide_password=True)!r}: "
            "use sqlite:///path.db or postgresql://user@host/db"
        )
    parsed = parsed.set(drivername=driver)
    options: dict[str, Any] = {"echo": echo}
    if pool_size is not None:
        options["pool_size"] = pool_size
    # The driver's own extra, named (SQLAlchemy would raise a bare ModuleNotFoundError).
    require(driver.split("+")[1], feature=f"A {parsed.get_backend_name()} engine")
    if driver == "postgresql+asyncpg":
        # validates them
        GroupCommitter(
            postgres_commit_batch,
            postgres_commits_in_flight,
            postgres_commit_queue,
            postgres_commit_linger,
        )
        check_seconds("postgres_connect_timeout", postgres_connect_timeout)
        check_seconds("postgres_statement_timeout", postgres_statement_timeout, optional=True)
        check_seconds("postgres_commit_timeout", postgres_commit_timeout)
        check_seconds("postgres_resolve_timeout", postgres_resolve_timeout)
        check_seconds(NOTIFY_TIMEOUT_OPTION, postgres_notify_timeout)
        connect_args: dict[str, Any] = {"timeout": float(postgres_connect_timeout)}
        if postgres_statement_timeout is not None:
            milliseconds = max(int(postgres_statement_timeout * 1000), 1)
            connect_args["server_settings"] = {"statement_timeout": str(milliseconds)}
        pg_engine = create_async_engine(
            parsed,
            connect_args=connect_args,
            execution_options={
                BATCH_OPTION: postgres_commit_batch,
                IN_FLIGHT_OPTION: postgres_commits_in_flight,
                LINGER_OPTION: float(postgres_commit_linger),
                COMMIT_TIMEOUT_OPTION: float(postgres_commit_timeout),
                RESOLVE_TIMEOUT_OPTION: float(postgres_resolve_timeout),
                COMMIT_QUEUE_OPTION: postgres_commit_queue,
                NOTIFY_TIMEOUT_OPTION: float(postgres_notify_timeout),
            },
            **options,
        )
        # Each connection's server process, to end it if the connection is lost
        # mid-commit (see postgres_outcome).
        event.listen(pg_engine.sync_engine, "connect", remember_backend)
        return pg_engine

    if sqlite_synchronous not in get_args(SQLiteSynchronous):
        raise ConfigurationError(
            f"sqlite_synchronous must be one of {get_args(SQLiteSynchronous)}, "
            f"got {sqlite_synchronous!r}"
        )
    if sqlite_flush not in get_args(SQLiteFlushMode):
        raise ConfigurationError(
            f"sqlite_flush must be one of {get_args(SQLiteFlushMode)}, got {sqlite_flush!r}"
        )
    if not parsed.database or parsed.database == ":memory:" or "memory" in parsed.query.values():
        raise ConfigurationError(
            "The SQL adapters need a SQLite *file* (several connections share it); for an "
            "in-memory store use cqrs_ddd_core.adapters.memory"
        )
    # sqlite3's own busy handler (``timeout``) makes a writer wait for the lock.
    # No rollback when a connection goes back to the pool unless a transaction
    # is open: on aiosqlite it would be one more hop after every plain read.
    engine = create_async_engine(
        parsed,
        connect_args={"timeout": float(sqlite_busy_timeout)},
        pool_reset_on_return=None,
        execution_options={FLUSH_MODE_OPTION: sqlite_flush},
        **options,
    )
    pragmas = ("PRAGMA journal_mode=WAL", f"PRAGMA synchronous={sqlite_synchronous}")

    @event.listens_for(engine.sync_engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            for pragma in pragmas:
                cursor.execute(pragma)
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "reset")
    def _reset(dbapi_connection: Any, record: Any, state: Any) -> None:
        if state.terminate_only:
            return
        driver = record.driver_connection
        if driver is None or getattr(driver, "in_transaction", True):
            dbapi_connection.rollback()

    return engine
