"""The SQL projection store: checkpoints in ``projection_checkpoints``, moved in
the same transaction as the projection's own rows.

A projection's handlers write through the ``AsyncConnection`` of
:meth:`SQLAlchemyProjectionStore.transaction`; :meth:`~SQLAlchemyProjectionStore.advance`
moves the checkpoint in that transaction with a compare-and-set (``WHERE
position = expected``), so the effects of a batch and the checkpoint past it
commit together, and a runner that lost a race rolls back instead of
applying a batch twice.

On PostgreSQL a runner's :meth:`~SQLAlchemyProjectionStore.session` holds a
connection of its own: a session-level advisory lock (one active runner per
projection; the others poll ``pg_try_advisory_lock`` and take over when the
holder's connection ends, e.g. its process died) and ``LISTEN`` on
:data:`~.tables.EVENTS_CHANNEL` (the adapter notifies it after each commit
that wrote events: :mod:`.postgres_notify`). On SQLite every runner is
active and polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError

from cqrs_ddd_core.adapters.sqlalchemy.engine import dialect_name
from cqrs_ddd_core.adapters.sqlalchemy.errors import persistence_error
from cqrs_ddd_core.adapters.sqlalchemy.reads import Query, fetch
from cqrs_ddd_core.adapters.sqlalchemy.tables import EVENTS_CHANNEL, projection_checkpoints
from cqrs_ddd_core.domain.messages import utc_now
from cqrs_ddd_core.exceptions import ConcurrencyError, PersistenceError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["PollingSession", "PostgresProjectionSession", "SQLAlchemyProjectionStore", "lock_key"]

_table = projection_checkpoints
_ONE = Query(select(_table.c.position).where(_table.c.name == bindparam("name")))
_ALL = Query(select(_table.c.name, _table.c.position).order_by(_table.c.name))


def lock_key(name: str) -> int:
    """The PostgreSQL advisory lock key of projection ``name`` (a signed 64-bit int)."""
    digest = hashlib.blake2b(f"cqrs_ddd.projection:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _ensure_row(dialect: str, name: str) -> Any:
    values = {"name": name, "position": 0, "updated_at": utc_now()}
    if dialect == "postgresql":
        return postgres_insert(_table).values(values).on_conflict_do_nothing()
    return sqlite_insert(_table).values(values).on_conflict_do_nothing()


class PollingSession:
    """Every runner is active; new events are found by polling (SQLite)."""

    @property
    def active(self) -> bool:
        """Always True: without a lock every runner is active."""
        return True

    async def acquire(self) -> None:
        """Return at once."""

    async def wait_for_events(self, seconds: float) -> None:
        """Wait ``seconds`` (the poll interval)."""
        await asyncio.sleep(seconds)


class PostgresProjectionSession:
    """One active runner per projection (advisory lock), woken by ``LISTEN``.

    Args:
        driver: The asyncpg connection the session owns.
        key: The advisory lock key (:func:`lock_key`).
        standby_interval: Seconds between two tries of a standby runner.
    """

    def __init__(self, driver: Any, key: int, standby_interval: float) -> None:
        self._driver = driver
        self._key = key
        self._standby_interval = standby_interval
        self._held = False
        self._lost = False
        self._wake = asyncio.Event()

    @property
    def active(self) -> bool:
        """True while the lock is held and the session's connection is alive."""
        return self._held and not self._lost and not self._driver.is_closed()

    def _on_notify(self, *_: Any) -> None:
        self._wake.set()

    def _on_close(self, *_: Any) -> None:
        self._lost = True
        self._wake.set()

    async def acquire(self) -> None:
        """Poll ``pg_try_advisory_lock`` until this runner holds the projection.

        Raises:
            PersistenceError: the session's connection failed.
        """
        try:
            self._driver.add_termination_listener(self._on_close)
            # Polling the server is the point: nothing notifies a lock's release.
            locked = "SELECT pg_try_advisory_lock($1)"
            while not await self._driver.fetchval(locked, self._key):  # noqa: ASYNC110
                await asyncio.sleep(self._standby_interval)
            self._held = True
            await self._driver.add_listener(EVENTS_CHANNEL, self._on_notify)
        except (OSError, DBAPIError) as exc:
            raise persistence_error(exc, "The projection session failed") from exc
        except Exception as exc:  # asyncpg's own errors (the driver is not imported here)
            if type(exc).__module__.startswith("asyncpg"):
                raise persistence_error(exc, "The projection session failed") from exc
            raise

    async def wait_for_events(self, seconds: float) -> None:
        """Return at the next notification (or a lost connection), or after ``seconds``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()


class SQLAlchemyProjectionStore:
    """Checkpoints in ``projection_checkpoints`` (SQLite or PostgreSQL).

    Args:
        engine: The database of the events and of the read models.
        standby_interval: PostgreSQL: seconds between a standby runner's
            tries of the advisory lock.
    """

    def __init__(self, engine: AsyncEngine, *, standby_interval: float = 0.5) -> None:
        self._engine = engine
        self._dialect = dialect_name(engine)
        self._standby_interval = standby_interval

    @property
    def engine(self) -> AsyncEngine:
        """The database of the checkpoints."""
        return self._engine

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction, committed when the block ends.

        Raises:
            PersistenceError: the database failed (the transaction rolled back).
        """
        try:
            async with self._engine.begin() as conn:
                yield conn
        except DBAPIError as exc:
            raise persistence_error(exc.orig or exc, "The projection transaction failed") from exc

    async def checkpoint(self, name: str) -> int:
        """The committed position of projection ``name`` (0 before its first batch)."""
        rows = await fetch(self._engine, _ONE, name=name)
        return int(rows[0][0]) if rows else 0

    async def checkpoints(self) -> dict[str, int]:
        """Every projection's committed position, by name."""
        return {row[0]: int(row[1]) for row in await fetch(self._engine, _ALL)}

    async def advance(
        self, tx: AsyncConnection, name: str, *, expected: int, position: int
    ) -> None:
        """Compare-and-set ``name``'s checkpoint in ``tx`` (see the module docstring).

        Raises:
            ConcurrencyError: it is no longer at ``expected``.
        """
        if expected == 0:
            await tx.execute(_ensure_row(self._dialect, name))
        result = await tx.execute(
            update(_table)
            .where(_table.c.name == name, _table.c.position == expected)
            .values(position=position, updated_at=utc_now())
        )
        if result.rowcount != 1:
            actual = (
                await tx.execute(select(_table.c.position).where(_table.c.name == name))
            ).scalar()
            raise ConcurrencyError(f"projection:{name}", expected, actual)

    async def reset(self, tx: AsyncConnection, name: str) -> None:
        """Set ``name``'s checkpoint back to 0 in ``tx`` (creating it if needed)."""
        await tx.execute(_ensure_row(self._dialect, name))
        await tx.execute(
            update(_table).where(_table.c.name == name).values(position=0, updated_at=utc_now())
        )

    @asynccontextmanager
    async def session(self, name: str) -> AsyncIterator[PollingSession | PostgresProjectionSession]:
        """A runner's session: polling on SQLite; lock and ``LISTEN`` on PostgreSQL.

        The PostgreSQL session's connection is closed (not pooled) at the
        end, which releases the lock and the ``LISTEN``.
        """
        if self._dialect != "postgresql":
            yield PollingSession()
            return
        try:
            conn = await self._engine.connect()
            raw = await conn.get_raw_connection()
        except DBAPIError as exc:
            raise persistence_error(exc.orig or exc, "The projection session failed") from exc
        except OSError as exc:
            raise PersistenceError(f"The projection session failed: {exc}") from exc
        try:
            yield PostgresProjectionSession(
                raw.driver_connection, lock_key(name), self._standby_interval
            )
        finally:
            # Closed, not pooled: its lock and LISTEN must not outlive the session.
            # A connection that died already has nothing left to release.
            with contextlib.suppress(Exception):
                await conn.invalidate()
            with contextlib.suppress(Exception):
                await conn.close()

    def __repr__(self) -> str:
        url = self._engine.url.render_as_string(hide_password=True)
        return f"SQLAlchemyProjectionStore({url!r})"
