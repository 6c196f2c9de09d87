"""SQLite: opening the writer's own ``sqlite3`` connection like the engine's.

The writer does not borrow a connection from SQLAlchemy's pool (the driver
connection under it is private to aiosqlite): it opens its own, with the
stdlib :mod:`sqlite3`, on the file the engine names
(``engine.dialect.create_connect_args``), and copies the settings a pooled
connection of the engine has (what ``create_engine`` or an application's
``connect`` hooks set): ``journal_mode``, ``synchronous``, ``busy_timeout``
and ``foreign_keys``. The busy timeout becomes the commit's deadline for the
write lock; the connection itself waits in short slices (see
:data:`.sqlite_batch.SLICE_MS`), or not at all when it writes inline.
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cqrs_ddd_core.adapters.sqlalchemy.errors import persistence_error
from cqrs_ddd_core.adapters.sqlalchemy.sqlite_batch import SLICE_MS
from cqrs_ddd_core.exceptions import ConfigurationError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["CONNECTION_FACTORY", "WriterSettings", "read_settings"]

CONNECTION_FACTORY: type[sqlite3.Connection] = sqlite3.Connection
"""The class of the writer's connection (``sqlite3.connect``'s ``factory``);
the fault-injection tests put a subclass here."""

_SYNCHRONOUS_WITHOUT_FSYNC = (0, 1)  # OFF, NORMAL: a WAL commit writes, never fsyncs


@dataclass(frozen=True, slots=True)
class WriterSettings:
    """How the writer's connection is opened and where its flushes run."""

    args: tuple[Any, ...]
    options: dict[str, Any]
    synchronous: int
    foreign_keys: int
    busy_ms: int
    inline: bool
    split: bool = False  # fsyncing, "auto": rows written inline, COMMIT on the thread

    @property
    def busy_seconds(self) -> float:
        """The commit's deadline for the write lock, in seconds."""
        return self.busy_ms / 1000

    def connect(self) -> sqlite3.Connection:
        """Open and prepare a writer connection (on the writer's thread).

        Inline, or writing inline and committing on the thread (``split``: see
        :mod:`.sqlite_split`), its busy timeout is 0 (the loop never waits for
        a lock; jobs on the thread wait in slices). Inline, it
        never checkpoints the WAL as part of a commit (a checkpoint syncs the
        database file, milliseconds the event loop must not wait for): the
        writer checkpoints on its thread instead, every so many commits.
        """
        options = {
            **self.options,
            "isolation_level": None,  # the jobs say BEGIN IMMEDIATE and COMMIT themselves
            "check_same_thread": False,  # inline flushes use it from the loop's thread
            "factory": CONNECTION_FACTORY,
        }
        conn: sqlite3.Connection = sqlite3.connect(*self.args, **options)
        try:
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute(f"PRAGMA foreign_keys={self.foreign_keys}")
            busy = 0 if self.inline or self.split else SLICE_MS
            conn.execute(f"PRAGMA busy_timeout={busy}")
            if self.inline:
                conn.execute("PRAGMA wal_autocheckpoint=0")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # a database?
        except BaseException:
            conn.close()
            raise
        return conn

    def connect_reader(self) -> sqlite3.Connection:
        """Open a reader connection (on a reader thread): the engine's busy timeout,
        statements in autocommit mode (each read sees every commit before it)."""
        options = {**self.options, "isolation_level": None, "check_same_thread": False}
        conn: sqlite3.Connection = sqlite3.connect(*self.args, **options)
        try:
            conn.execute(f"PRAGMA busy_timeout={self.busy_ms}")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # a database?
        except BaseException:
            conn.close()
            raise
        return conn


def _probe(args: tuple[Any, ...], options: dict[str, Any]) -> None:
    conn = sqlite3.connect(*args, **{**options, "check_same_thread": False})
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    finally:
        conn.close()


async def read_settings(engine: AsyncEngine, mode: str, modes: tuple[str, ...]) -> WriterSettings:
    """The settings of ``engine``'s pooled connections, for the writer's own.

    Raises:
        ConfigurationError: ``mode`` is not one of ``modes``.
        PersistenceError: the database cannot be opened or is not a database
            (the driver's error chained).
    """
    if mode not in modes:
        raise ConfigurationError(f"sqlite_flush must be one of {modes}, got {mode!r}")
    try:
        args, options = engine.dialect.create_connect_args(engine.url)
        # The file first, with the standard library: a database that cannot be
        # opened fails here, before any pooled (aiosqlite) connection is tried.
        await asyncio.to_thread(_probe, tuple(args), dict(options))
        async with engine.connect() as conn:
            values = [
                (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
            ]
    except Exception as exc:
        raise persistence_error(exc, "Cannot open the SQLite database") from exc
    journal, synchronous, busy_ms, foreign_keys = (
        value if value is not None else 0 for value in values
    )
    inline = mode == "loop" or (
        mode == "auto" and journal == "wal" and synchronous in _SYNCHRONOUS_WITHOUT_FSYNC
    )
    # WAL only: there a COMMIT never waits for readers (the connection's busy
    # timeout is 0 when it splits); a rollback journal keeps the whole job on
    # the thread.
    split = not inline and mode == "auto" and journal == "wal"
    return WriterSettings(
        tuple(args), dict(options), int(synchronous), int(foreign_keys), int(busy_ms), inline, split
    )
