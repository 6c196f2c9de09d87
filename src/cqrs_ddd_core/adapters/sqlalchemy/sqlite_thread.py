"""SQLite: a thread of the adapter's own, holding one stdlib ``sqlite3`` connection.

The writer (:mod:`.sqlite`) sends each commit's job here in one hop: the job
is queued, the thread runs it with the connection and hands the result back
to the event loop (``call_soon_threadsafe``). A job sent to an idle thread
is handed over (:meth:`WriterThread.hand_over`): the event loop waits, the
GIL released, until the thread has taken it, so that the thread starts it
at once instead of waiting for a busy loop to let go of the GIL. Jobs run
one at a time, in the
order they were sent, so the connection is never used by two threads at
once (the event loop uses it inline only while no job is out, see
:meth:`~.sqlite.SQLiteWriter.idle`).

Only public APIs are used: :mod:`sqlite3`, :mod:`threading`, :mod:`queue`
and :mod:`asyncio`. A job that leaves its connection inside a transaction
(its ``ROLLBACK`` failed) or broken gets the connection discarded: the
thread closes it (which rolls back whatever it held) and opens a fresh one
before the next job.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import structlog
from sqlalchemy import event

from cqrs_ddd_core.adapters.sqlalchemy.errors import persistence_error

__all__ = ["HAND_OVER_SECONDS", "WriterClosedError", "WriterThread", "healthy", "per_pool"]

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine
    from sqlalchemy.pool import Pool

T = TypeVar("T")
_log = structlog.get_logger("cqrs_ddd_core.adapters.sqlalchemy")

Connect = Callable[[], sqlite3.Connection]


class WriterClosedError(Exception):
    """The writer thread was closed before the job could run (nothing ran)."""


def healthy(conn: sqlite3.Connection) -> bool:
    """Whether ``conn`` is open and outside any transaction (fit for the next job)."""
    try:
        return not conn.in_transaction
    except sqlite3.Error:  # closed, or broken
        return False


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled: the job's own records tell what it did
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


_STOP = object()

HAND_OVER_SECONDS = 0.001
"""The longest the event loop waits for an idle thread to take a job (see
:meth:`WriterThread.hand_over`): on a machine too loaded to schedule the
thread within it, the loop goes on and the thread starts when it can. A
fifth of the interpreter's switch interval, the longest the thread would
otherwise wait for the GIL."""


class WriterThread:
    """One daemon thread and the ``sqlite3`` connection it runs jobs with (the
    writer's, or a reader's: :mod:`.sqlite_reader`).

    Args:
        connect: Opens and prepares a connection (called on this thread, at
            start and whenever the previous connection was discarded). The
            connection must allow use from another thread
            (``check_same_thread=False``): the event loop flushes inline on it
            while the thread is idle.
        name: The thread's name (in stack dumps).
    """

    __slots__ = ("_closed", "_connect", "_done", "_queue", "_sent", "_thread", "connection")

    def __init__(self, connect: Connect, *, name: str = "cqrs-ddd-sqlite-writer") -> None:
        self._connect = connect
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._sent = 0  # jobs submitted (by the event loop's thread)
        self._done = 0  # jobs finished (by this thread)
        self.connection: sqlite3.Connection | None = None
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (no job is accepted any more)."""
        return self._closed

    @property
    def idle(self) -> bool:
        """Whether every job submitted so far has finished (checked on the event
        loop's thread, which alone submits: nothing then uses the connection)."""
        return self._sent == self._done

    @property
    def ident(self) -> int | None:
        """The thread's identifier (``None`` before it starts)."""
        return self._thread.ident

    async def start(self) -> None:
        """Start the thread and open its connection there.

        Raises:
            PersistenceError: the database cannot be opened (the cause chained);
                the thread is closed again.
        """
        self._thread.start()
        try:
            await self.submit(_noop)
        except BaseException:
            self.close()
            raise

    def submit(self, job: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queue ``job(connection, *args)``; the future gets what it returns or raises.

        Cancelling the future does not stop the job: it runs when its turn
        comes, and whatever it records for itself stands.

        Raises:
            WriterClosedError: the thread was closed; nothing was queued.
        """
        return self._submit(job, args, None)

    def hand_over(self, job: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """:meth:`submit`, then, if the thread was idle, wait (the GIL released) until
        it has taken the job, at most :data:`HAND_OVER_SECONDS`.

        Without this, the woken thread needs the GIL back before it can start
        the job, and an event loop busy running other tasks' Python keeps it
        for up to the interpreter's switch interval (5 ms); the job (an
        ``fsync`` at ``FULL``) then starts only once the loop runs out of work
        instead of running while it works. The wait is the thread's wake-up
        (tens of microseconds), never longer than the bound.

        Raises:
            WriterClosedError: the thread was closed; nothing was queued.
        """
        started: threading.Lock | None = None
        if self._sent == self._done and not self._closed:
            started = threading.Lock()
            started.acquire()
        future = self._submit(job, args, started)
        if started is not None:
            started.acquire(timeout=HAND_OVER_SECONDS)
        return future

    def _submit(
        self, job: Callable[..., T], args: tuple[Any, ...], started: threading.Lock | None
    ) -> asyncio.Future[T]:
        if self._closed:
            raise WriterClosedError("The SQLite writer connection is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._sent += 1
        self._queue.put((future, job, args, started))
        return future

    def close(self) -> None:
        """Stop the thread after the jobs queued so far; it closes the connection."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)

    # -- on the thread -------------------------------------------------------

    def _main(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            future, job, args, started = item
            if started is not None:
                started.release()  # the loop waits for this, the GIL released
            result: Any = None
            error: BaseException | None = None
            try:
                conn = self._ensure_connection()
                try:
                    result = job(conn, *args)
                finally:
                    if not healthy(conn):
                        self._discard(conn)
            except BaseException as exc:  # delivered to the caller, never lost here
                error = exc
            self._done += 1
            loop = future.get_loop()
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(_resolve, future, result, error)
        last, self.connection = self.connection, None
        if last is not None:
            with contextlib.suppress(sqlite3.Error):
                last.close()

    def _ensure_connection(self) -> sqlite3.Connection:
        conn = self.connection
        if conn is None:
            try:
                conn = self.connection = self._connect()
            except Exception as exc:
                raise persistence_error(exc, "Cannot open the SQLite database") from exc
        return conn

    def _discard(self, conn: sqlite3.Connection) -> None:
        """Close a connection left inside a transaction (or broken): closing rolls
        back what it held; the next job opens a fresh one."""
        _log.warning("sqlite_writer_connection_discarded")
        if self.connection is conn:
            self.connection = None
        with contextlib.suppress(sqlite3.Error):
            conn.close()

    def discard_inline(self, conn: sqlite3.Connection) -> None:
        """:meth:`_discard` for a connection the event loop used inline (the thread is idle)."""
        self._discard(conn)


def _noop(_conn: sqlite3.Connection) -> None:
    return None


class _Closeable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=_Closeable)


def per_pool(
    cache: weakref.WeakKeyDictionary[Pool, C], engine: AsyncEngine, make: Callable[[], C]
) -> C:
    """The object ``cache`` keeps for ``engine``'s current pool, made on first
    use and closed when the engine is disposed (a new pool gets a new one)."""
    pool = engine.sync_engine.pool
    found = cache.get(pool)
    if found is None:
        found = cache[pool] = make()
        ref = weakref.ref(found)

        def _on_dispose(_engine: Any) -> None:
            alive = ref()
            if alive is not None:
                alive.close()

        event.listen(engine.sync_engine, "engine_disposed", _on_dispose)
    return found
