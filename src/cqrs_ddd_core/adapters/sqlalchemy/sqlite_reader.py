"""SQLite reads: one hop to a reader thread of the adapter's own.

Through SQLAlchemy's async layer a SQLite read costs four or five hops to the
aiosqlite thread and back; the driver's own thread is private to aiosqlite.
So, like the writer (:mod:`.sqlite`), reads use threads of the adapter's own
(:class:`~.sqlite_thread.WriterThread`, ``READERS`` of them, taken in turn),
each holding a stdlib ``sqlite3`` connection opened like the engine's
(:mod:`.sqlite_open`): a read is one job, one hop. In WAL mode readers never
wait for the writer, and each read sees every commit that returned before it
started. ``engine.dispose()`` stops them.
"""

from __future__ import annotations

import sqlite3
import weakref
from typing import TYPE_CHECKING, Any

from cqrs_ddd_core.adapters.sqlalchemy.sqlite_open import read_settings
from cqrs_ddd_core.adapters.sqlalchemy.sqlite_thread import (
    WriterClosedError,
    WriterThread,
    per_pool,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine
    from sqlalchemy.pool import Pool

__all__ = ["READERS", "SQLiteReader", "reader_for"]

READERS = 2
"""Reader threads per engine (reads run on them in turn)."""


def _fetch_job(conn: sqlite3.Connection, sql: str, args: list[Any]) -> list[Any]:
    return conn.execute(sql, args).fetchall()


class SQLiteReader:
    """The reader threads of one engine's pool, opened at the first read."""

    __slots__ = ("__weakref__", "_next", "_threads")

    def __init__(self) -> None:
        self._threads: list[WriterThread] = []
        self._next = 0

    async def fetch(self, engine: AsyncEngine, sql: str, args: list[Any]) -> list[Any]:
        """The rows ``sql`` returns for ``args``, read on one of the reader threads.

        Raises:
            PersistenceError: the database cannot be opened (the cause chained).
            sqlite3.Error: the read failed (the caller translates it).
        """
        for _ in range(2):  # closed under us (dispose): open again, once
            threads = self._threads or await self._open(engine)
            self._next = index = (self._next + 1) % len(threads)
            try:
                rows: list[Any] = await threads[index].submit(_fetch_job, sql, args)
                return rows
            except WriterClosedError:
                if self._threads is threads:
                    self._threads = []
        raise WriterClosedError("The SQLite readers kept closing")

    async def _open(self, engine: AsyncEngine) -> list[WriterThread]:
        settings = await read_settings(engine, "thread", ("thread",))
        if self._threads:  # opened by another read meanwhile
            return self._threads
        threads = [
            WriterThread(settings.connect_reader, name="cqrs-ddd-sqlite-reader")
            for _ in range(READERS)
        ]
        self._threads = threads
        weakref.finalize(self, _close_all, threads)
        try:
            for thread in threads:
                await thread.start()
        except BaseException:
            if self._threads is threads:
                self._threads = []
            _close_all(threads)
            raise
        return threads

    def close(self) -> None:
        """Stop the threads after the reads queued so far (inside ``engine.dispose()``)."""
        threads, self._threads = self._threads, []
        _close_all(threads)


def _close_all(threads: list[WriterThread]) -> None:
    for thread in threads:
        thread.close()


_readers: weakref.WeakKeyDictionary[Pool, SQLiteReader] = weakref.WeakKeyDictionary()


def reader_for(engine: AsyncEngine) -> SQLiteReader:
    """The readers of ``engine``'s current pool (new ones after ``dispose()``)."""
    return per_pool(_readers, engine, SQLiteReader)
