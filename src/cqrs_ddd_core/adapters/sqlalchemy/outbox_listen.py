"""Waking relays in other processes when outbox rows commit (PostgreSQL ``LISTEN``).

The adapter sends ``NOTIFY`` on :data:`~.tables.OUTBOX_NOTIFY_CHANNEL`
after each commit that wrote outbox rows, from a transaction of its own
(:mod:`.postgres_notify`); a lost one delays the relay until its next poll.
:class:`OutboxListener` holds one
connection that ``LISTEN``\\ s on that channel and calls back on each
notification. On SQLite there is no such thing: relays in the same process
wake through the store's commit listeners, others poll.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import DBAPIError

from cqrs_ddd_core.adapters.sqlalchemy.errors import persistence_error
from cqrs_ddd_core.adapters.sqlalchemy.tables import OUTBOX_NOTIFY_CHANNEL

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["OutboxListener"]


class OutboxListener:
    """Calls ``callback()`` whenever a transaction that wrote outbox rows commits.

    Args:
        engine: The outbox's database. On SQLite :meth:`start` does nothing
            (:attr:`listening` stays False).

    When the connection is lost, :attr:`listening` becomes False and the
    callback runs once (so the relay looks at the outbox, then polls); call
    :meth:`start` again to listen anew.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None
        self._driver: Any = None
        self._callback: Callable[[], None] | None = None

    @property
    def listening(self) -> bool:
        """Whether a connection is listening now."""
        return self._driver is not None and not self._driver.is_closed()

    async def start(self, callback: Callable[[], None]) -> None:
        """Listen (again) and call ``callback`` on each notification.

        Raises:
            PersistenceError: the database could not be reached.
        """
        await self.stop()
        if self._engine.dialect.name != "postgresql":
            return
        self._callback = callback
        try:
            conn = await self._engine.connect()
        except DBAPIError as exc:
            raise persistence_error(exc.orig or exc, "Outbox LISTEN connection failed") from exc
        try:
            raw = await conn.get_raw_connection()
            driver: Any = raw.driver_connection  # asyncpg's Connection
            await driver.add_listener(OUTBOX_NOTIFY_CHANNEL, self._on_notify)
            driver.add_termination_listener(self._on_terminated)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await conn.invalidate()
            if isinstance(exc, DBAPIError | OSError):
                raise persistence_error(exc, "Outbox LISTEN failed") from exc
            raise
        self._conn, self._driver = conn, driver

    def _on_notify(self, *_: object) -> None:
        if self._callback is not None:
            self._callback()

    def _on_terminated(self, *_: object) -> None:
        self._driver = None
        if self._callback is not None:
            self._callback()

    async def stop(self) -> None:
        """Stop listening and give the connection up (a dead one is discarded)."""
        conn, driver = self._conn, self._driver
        self._conn, self._driver = None, None
        if conn is None:
            return
        with contextlib.suppress(Exception):
            if driver is not None and not driver.is_closed():
                await driver.remove_listener(OUTBOX_NOTIFY_CHANNEL, self._on_notify)
        # The connection listened: drop it rather than hand it to the next user.
        with contextlib.suppress(Exception):
            await conn.invalidate()
        with contextlib.suppress(Exception):
            await conn.close()

    def __repr__(self) -> str:
        return f"OutboxListener({self._engine.url.render_as_string(hide_password=True)!r})"
