"""PostgreSQL: what became of a commit whose answer did not arrive, or clashed on its ids.

Two questions are answered here, both by looking the commit's event ids up
(``events.event_id`` is unique, and a flush is one atomic statement, so one
stored id means the whole flush committed):

* **The connection was lost** after the statement was sent (:func:`resolve`).
  The old server process may still be running the statement, so "not found"
  means nothing until it is gone: a fresh connection ends it
  (``pg_terminate_backend``, its pid and start time remembered when it
  connected, see :func:`remember_backend`) and waits until it has left
  ``pg_stat_activity``; then the look-up is final. Found: committed. Not
  found once the old process is gone: nothing was written. Anything else
  within the time allowed: unknown.
* **An event id is stored already** (:func:`replay_outcome`): every id of
  the unit of work stored means it committed before (a retried command):
  nothing more is written and the commit succeeds; only some of them means
  another unit of work holds them: :class:`ConcurrencyError`.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from cqrs_ddd_core.adapters.sqlalchemy.errors import concurrency_error
from cqrs_ddd_core.adapters.sqlalchemy.plan import FlushPlan, StreamAppend

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.ext.asyncio import AsyncEngine

    from cqrs_ddd_core.exceptions import PersistenceError

__all__ = [
    "BACKEND_KEY",
    "REPLAYED",
    "BackendIdentity",
    "remember_backend",
    "replay_outcome",
    "resolve",
    "stored_event_ids",
]

BACKEND_KEY = "cqrs_ddd_backend"
"""Where a pooled connection's ``info`` keeps its server process (pid, start time)."""

BackendIdentity = tuple[int, "datetime"]

_IDENTIFY = "SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"
_STORED = "SELECT event_id FROM events WHERE event_id = ANY($1::text[])"
_STORED_STREAMS = (
    "SELECT event_id, aggregate_type, aggregate_id FROM events WHERE event_id = ANY($1::text[])"
)
_TERMINATE = (
    "SELECT pg_terminate_backend(pid, $3) FROM pg_stat_activity "
    "WHERE pid = $1 AND backend_start = $2"
)
_ALIVE = "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND backend_start = $2"


def remember_backend(dbapi_connection: Any, record: Any) -> None:
    """A pool ``connect`` listener: keep the new connection's server process identity.

    The start time tells the process apart from a later one given the same pid.
    """
    row = dbapi_connection.run_async(lambda conn: conn.fetchrow(_IDENTIFY))
    if row is not None:
        record.info[BACKEND_KEY] = (row[0], row[1])


async def stored_event_ids(conn: Any, event_ids: list[str]) -> set[str]:
    """Which of ``event_ids`` are stored (committed)."""
    return {row[0] for row in await conn.fetch(_STORED, event_ids)}


REPLAYED = "replayed"
"""What :func:`replay_outcome` returns for a unit of work that committed before."""


async def replay_outcome(
    conn: Any, plan: FlushPlan, cause: BaseException
) -> PersistenceError | str | None:
    """After a clash involving ``plan``'s events, what their stored ids say.

    Returns:
        :data:`REPLAYED` when every event id is stored, each in the stream
        ``plan`` appends it to (the unit of work committed before); a
        :class:`ConcurrencyError` naming the stream when only some are (another
        unit of work holds them); ``None`` when none is, or one is stored in
        another stream (the clash is something else: the caller decides).
    """
    if not plan.events:
        return None
    rows = await conn.fetch(_STORED_STREAMS, [event.event_id for event in plan.events])
    verdict = plan.replay_verdict({row[0]: (row[1], row[2]) for row in rows})
    if not isinstance(verdict, StreamAppend):
        return verdict  # REPLAYED, or None
    return concurrency_error(verdict.stream, verdict.expected_version, None, cause)


async def resolve(
    engine: AsyncEngine, plan: FlushPlan, backend: BackendIdentity | None, seconds: float
) -> bool | None:
    """Whether ``plan``'s lost flush committed: ``True``, ``False`` (nothing was
    written), or ``None`` (not learnt within ``seconds``).

    A plan without events cannot be recognised: ``None`` (after ending the old
    process, so that it holds no lock). Without the old process's identity
    only a found id is conclusive.
    """
    ids = list({event.event_id for event in plan.events})
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        try:
            async with asyncio.timeout_at(deadline):
                fairy = await engine.raw_connection()
                try:
                    left = deadline - loop.time()
                    outcome = await _look(fairy.driver_connection, ids, backend, left)
                finally:
                    await _close(fairy)
                if outcome is not None or not ids or backend is None:
                    return outcome
        except TimeoutError:
            return None
        except Exception:  # the server may not be back yet: try again
            pass
        if loop.time() >= deadline:
            return None
        await asyncio.sleep(min(0.05, max(deadline - loop.time(), 0)))


async def _look(
    conn: Any, ids: list[str], backend: BackendIdentity | None, seconds: float
) -> bool | None:
    if ids and await stored_event_ids(conn, ids):
        return True  # the flush is atomic: one id stored means all of it committed
    if backend is None:
        return None
    pid, started = backend
    wait_ms = max(int(seconds * 1000) - 100, 1)
    await conn.fetch(_TERMINATE, pid, started, wait_ms)
    if await conn.fetchval(_ALIVE, pid, started):
        return None  # still there (it may be committing): ask again
    if not ids:
        return None
    return bool(await stored_event_ids(conn, ids))


async def _close(fairy: Any) -> None:
    from sqlalchemy.util import greenlet_spawn

    with contextlib.suppress(Exception):
        await greenlet_spawn(fairy.close)
