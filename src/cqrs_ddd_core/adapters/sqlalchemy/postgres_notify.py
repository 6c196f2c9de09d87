"""PostgreSQL wake-ups: ``NOTIFY`` after the commit, outside the writing transaction.

Projection runners ``LISTEN`` on :data:`~.tables.EVENTS_CHANNEL` and relays
on :data:`~.tables.OUTBOX_NOTIFY_CHANNEL`. The notification is not sent by
the writing transaction (the table triggers of earlier development
versions did that): PostgreSQL lets
one transaction that has sent a notification commit at a time, cluster-wide,
and holds that turn through the commit's WAL flush, so every writer that
notified took turns with every other, in any process.

Instead, once a commit is known to have committed (:func:`~.postgres.run_flush`
returned), :meth:`CommitNotifier.committed` records which channels it
concerns (events written: the events channel; outbox rows: the outbox
channel) and returns at once; the caller's result is neither delayed nor
changed. One task per engine sends the notifications, in a transaction of
its own on a connection it keeps for them: one query,
``NOTIFY "cqrs_events"; NOTIFY "cqrs_outbox"`` (or one of the two). A
utility statement costs the server no planning nor executor, unlike
``SELECT pg_notify(...)`` (measured: about a third less CPU of the notifying
backend per round). That transaction writes nothing but its commit
record, which PostgreSQL does not wait to flush (``synchronous_commit``
does not apply to a transaction that wrote no WAL before committing; not
even a synchronous standby is waited for), so it holds the notification
turn for no flush.

**At most one round in flight per engine, and at most one per**
:data:`ROUND_INTERVAL` **(5 ms).** While a round is on its way, further
commits only set a flag; one more round follows when it ends, taking every
flag set meanwhile. A round starts at once after a quiet spell, so a lone
commit wakes listeners without delay; in a stream of commits the next round
waits until the interval since the last one has passed, taking every commit
made meanwhile. However many commits an engine makes, it sends at most one
notifying transaction at a time and at most 200 a second (measured: one
round after every commit cost one sender about a fifth of its throughput).

**One kept connection per engine.** The first round takes a connection from
the engine's pool and detaches it (the pool makes another when it needs
one); later rounds send on it, with no pool checkout and check-in and no
greenlet (measured: a fifth fewer instructions in the sender per round). A round
that fails, times out or is cancelled closes it (its state is unknown), and
the next round opens another; so does a round after the engine was disposed.

**Bounded, and never an error for the commit.** A round is bounded by the
engine's ``postgres_notify_timeout`` execution option
(:data:`DEFAULT_NOTIFY_TIMEOUT` seconds, opening the connection included); a
failed or late round is logged (``postgres_notify_failed``) and dropped.

**A lost wake-up costs latency only.** Runners and relays read from their
checkpoints (the outbox's unpublished rows) and poll at their interval as a
fallback, so a notification that never comes (a failed round, a crash right
after the commit, a listener reconnecting) delays them at most until their
next poll; it never loses or reorders anything. A notification that comes
without new rows (a commit that was already stored, sent again) is harmless
for the same reason. A refused commit sends none.

**Closing.** The task is kept referenced by the notifier. When the engine is
disposed (``await engine.dispose()``), the round in flight and the one
pending are given up to the notify timeout to finish, then cancelled and
awaited, so no task is left pending (``Task was destroyed but it is
pending``); then the kept connection is closed (at once, without a round
trip, by a synchronous ``dispose()``). It is never handed back to a pool: a
round that outlives the pool its connection came from closes it and opens
another.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import event
from sqlalchemy.exc import MissingGreenlet
from sqlalchemy.util import await_only, greenlet_spawn

from cqrs_ddd_core.adapters.sqlalchemy.postgres_settings import check_seconds
from cqrs_ddd_core.adapters.sqlalchemy.tables import EVENTS_CHANNEL, OUTBOX_NOTIFY_CHANNEL
from cqrs_ddd_core.exceptions import ConfigurationError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine
    from sqlalchemy.pool import Pool

__all__ = [
    "DEFAULT_NOTIFY_TIMEOUT",
    "NOTIFY_TASK_NAME",
    "NOTIFY_TIMEOUT_OPTION",
    "ROUND_INTERVAL",
    "CommitNotifier",
    "notifier_for",
    "notify_sql",
]

NOTIFY_TIMEOUT_OPTION = "postgres_notify_timeout"
DEFAULT_NOTIFY_TIMEOUT = 5.0
ROUND_INTERVAL = 0.005
"""The shortest time between the starts of two rounds of one engine (seconds):
a listener hears of a commit at most this much later than it could have."""
NOTIFY_TASK_NAME = "cqrs-postgres-notify"
"""The name of the task that sends an engine's notifications."""

_log = structlog.get_logger("cqrs_ddd_core.adapters.sqlalchemy.postgres_notify")


def notify_sql(*, events: bool, outbox: bool) -> str:
    """The query of one round, notifying the channels asked for (payloads empty):
    one ``NOTIFY`` statement per channel, sent at once (simple query protocol: one
    implicit transaction)."""
    pairs = ((EVENTS_CHANNEL, events), (OUTBOX_NOTIFY_CHANNEL, outbox))
    return "; ".join(f'NOTIFY "{name}"' for name, on in pairs if on)


_SQL = {
    (True, False): notify_sql(events=True, outbox=False),
    (False, True): notify_sql(events=False, outbox=True),
    (True, True): notify_sql(events=True, outbox=True),
}


class CommitNotifier:
    """Sends one engine's wake-ups after its commits (see the module's description).

    Attributes:
        rounds: Rounds sent successfully.
        failures: Rounds that failed or timed out (logged, dropped).
    """

    __slots__ = (
        "__weakref__",
        "_conn",
        "_events",
        "_last",
        "_loop",
        "_outbox",
        "_pool",
        "_task",
        "failures",
        "rounds",
        "timeout",
    )

    def __init__(self, timeout: float = DEFAULT_NOTIFY_TIMEOUT) -> None:
        check_seconds(NOTIFY_TIMEOUT_OPTION, timeout)
        self.timeout = float(timeout)
        self._events = False
        self._outbox = False
        self._task: asyncio.Task[None] | None = None
        self._last = float("-inf")  # when the last round started (the loop's clock)
        self._conn: Any = None  # the kept connection (asyncpg's), or None
        self._pool: Pool | None = None  # the engine's pool when it was opened
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop it belongs to
        self.rounds = 0
        self.failures = 0

    @property
    def busy(self) -> bool:
        """Whether a round is in flight (or about to start) now."""
        task = self._task
        return task is not None and not task.done()

    def committed(self, engine: AsyncEngine, *, events: bool, outbox: bool) -> None:
        """A commit that wrote ``events`` and/or ``outbox`` rows has committed.

        Returns at once and never raises (the commit's outcome is not its
        concern): a round starts now, or follows the one in flight.
        """
        if not (events or outbox):
            return
        self._events |= events
        self._outbox |= outbox
        task = self._task
        try:
            loop = asyncio.get_running_loop()
            if task is not None and not task.done() and task.get_loop() is loop:
                return  # the round in flight is followed by one more, taking these flags
            self._task = loop.create_task(self._run(engine.sync_engine), name=NOTIFY_TASK_NAME)
        except Exception as exc:  # a wake-up lost: listeners poll (see above)
            self.failures += 1
            _log.warning(
                "postgres_notify_failed", error_type=type(exc).__name__, error=str(exc)[:200]
            )

    async def _run(self, sync_engine: Engine) -> None:
        loop = asyncio.get_running_loop()
        while self._events or self._outbox:
            wait = self._last + ROUND_INTERVAL - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)  # commits made meanwhile join this round
            self._last = loop.time()
            key = (self._events, self._outbox)
            self._events = self._outbox = False
            try:
                async with asyncio.timeout(self.timeout):
                    await self._send(sync_engine, loop, _SQL[key])
            except Exception as exc:  # a wake-up lost: listeners poll (see above)
                self.failures += 1
                _log.warning(
                    "postgres_notify_failed",
                    error_type=type(exc).__name__,
                    error=str(exc)[:200],
                    timeout=self.timeout,
                )
            else:
                self.rounds += 1

    async def _send(self, sync_engine: Engine, loop: asyncio.AbstractEventLoop, sql: str) -> None:
        """One round on the kept connection, opened first if there is none fit to use."""
        conn = self._conn
        if (
            conn is None
            or self._pool is not sync_engine.pool  # the engine was disposed since
            or self._loop is not loop
            or conn.is_closed()
        ):
            self._drop()
            pool = sync_engine.pool
            conn = await greenlet_spawn(_open, sync_engine)
            self._conn, self._pool, self._loop = conn, pool, loop
        try:
            await conn.execute(sql)
        except BaseException:
            # Failed, timed out or cancelled mid-statement: its state is unknown.
            self._drop()
            raise

    def _drop(self) -> None:
        """Close the kept connection at once (no round trip) and forget it."""
        conn, self._conn, self._pool, self._loop = self._conn, None, None, None
        if conn is not None:
            with contextlib.suppress(Exception):  # its loop may be closed already
                conn.terminate()

    def _disposed(self, _engine: Engine) -> None:
        """``engine_disposed``: let the pending rounds finish (bounded), then cancel;
        close the kept connection."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # no loop here: the task's own loop is gone or elsewhere
            loop = None
        task = self._task
        if loop is not None and task is not None and not task.done() and task.get_loop() is loop:
            try:
                await_only(self._finish(task))
            except MissingGreenlet:  # a synchronous dispose(): it cannot wait
                task.cancel()
        conn = self._conn
        if conn is None or self._loop is not loop:
            return  # none, or another loop's (closed when next used: the pool has changed)
        self._conn = self._pool = self._loop = None
        try:
            await_only(conn.close(timeout=self.timeout))
        except MissingGreenlet:  # a synchronous dispose(): no round trip
            conn.terminate()
        except Exception:  # closing failed (asyncpg has ended the connection): dropped
            with contextlib.suppress(Exception):
                conn.terminate()

    async def _finish(self, task: asyncio.Task[None]) -> None:
        await asyncio.wait({task}, timeout=self.timeout)
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({task}, timeout=self.timeout)
        self._events = self._outbox = False


def _open(sync_engine: Engine) -> Any:
    """A connection of the engine's own kind, taken from its pool and detached:
    the notifier's alone from now on, closed by it, never handed back."""
    fairy = sync_engine.raw_connection()
    try:
        conn = fairy.driver_connection  # asyncpg's Connection
        fairy.detach()
    except BaseException:
        fairy.invalidate()
        fairy.close()
        raise
    return conn


_notifiers: weakref.WeakKeyDictionary[Engine, CommitNotifier] = weakref.WeakKeyDictionary()


def notifier_for(engine: AsyncEngine) -> CommitNotifier:
    """The notifier of ``engine`` (made on first use; its timeout is the engine's
    ``postgres_notify_timeout`` execution option)."""
    sync_engine = engine.sync_engine
    notifier = _notifiers.get(sync_engine)
    if notifier is None:
        timeout = engine.get_execution_options().get(NOTIFY_TIMEOUT_OPTION, DEFAULT_NOTIFY_TIMEOUT)
        try:
            notifier = CommitNotifier(timeout)
        except ConfigurationError:  # set by hand on an engine made elsewhere: the default
            _log.warning("postgres_notify_timeout_invalid", value=repr(timeout))
            notifier = CommitNotifier()
        _notifiers[sync_engine] = notifier
        event.listen(sync_engine, "engine_disposed", notifier._disposed)
    return notifier
