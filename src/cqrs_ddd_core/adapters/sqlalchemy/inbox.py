"""The SQL inbox: a consumer's message ids, committed with the handler's effects.

One transaction (on a connection of its own, begun by its first statement:
SQLAlchemy's autobegin, one step fewer than ``begin()`` and the same ``BEGIN``
sent to the database) holds one delivery or a batch of them:
the inbox rows go in first with ``INSERT ... ON CONFLICT DO NOTHING``; a row
that was there already is a redelivery, which the caller skips (rolls back, or
leaves out of the batch) and acknowledges. A batch's rows go in with one
statement (:meth:`SQLAlchemyInboxTransaction.record_many`: on PostgreSQL one
``INSERT ... SELECT FROM unnest(...) RETURNING``, one prepared statement for
every batch size). On PostgreSQL a concurrent delivery of the same message
waits on the primary key until the first commits (then finds the row) or
rolls back (then takes over), so two consumers never both apply one message.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from cqrs_ddd_core.adapters.sqlalchemy.errors import persistence_error
from cqrs_ddd_core.adapters.sqlalchemy.tables import inbox
from cqrs_ddd_core.domain.messages import utc_now
from cqrs_ddd_core.exceptions import CommitOutcomeUnknownError, PersistenceError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["SQLAlchemyInboxStore", "SQLAlchemyInboxTransaction"]


def _record_statement(insert: Any) -> Any:
    # Built once per dialect, values bound per delivery: SQLAlchemy's compiled
    # cache then serves every delivery without building a statement.
    return (
        insert(inbox)
        .values(
            consumer=bindparam("consumer"),
            message_id=bindparam("message_id"),
            message_type=bindparam("message_type"),
            received_at=bindparam("received_at"),
        )
        .on_conflict_do_nothing()
    )


_INSERTS: dict[str, Any] = {
    "postgresql": _record_statement(postgresql.insert),
    "sqlite": _record_statement(sqlite.insert),
}


_RECORD_MANY_PG = text(
    "INSERT INTO inbox (consumer, message_id, message_type, received_at) "
    "SELECT :consumer, m.id, m.type, :received_at "
    "FROM unnest(CAST(:ids AS VARCHAR[]), CAST(:types AS VARCHAR[])) "
    "WITH ORDINALITY AS m(id, type, n) ORDER BY m.n "
    "ON CONFLICT DO NOTHING RETURNING message_id"
).bindparams(bindparam("received_at", type_=inbox.c.received_at.type))
"""A batch's inbox rows in one statement (rows in the batch's order, so that two
transactions inserting the same ids lock them in the same order)."""


class SQLAlchemyInboxTransaction:
    """One delivery's transaction; the handler writes with :attr:`connection`."""

    def __init__(self, connection: AsyncConnection) -> None:
        # The connection's own transaction, begun by its first statement.
        self.connection: AsyncConnection = connection
        self._hooks: list[Callable[[], None]] = []
        self._open = True
        self._message_id: str | None = None
        self._insert = _INSERTS[connection.dialect.name]

    async def record(self, consumer: str, message_id: str, message_type: str) -> bool:
        """Insert the inbox row; False when it exists (the message was handled)."""
        self._message_id = message_id
        row = {
            "consumer": consumer,
            "message_id": message_id,
            "message_type": message_type,
            "received_at": utc_now(),
        }
        try:
            result = await self.connection.execute(self._insert, row)
        except DBAPIError as exc:
            raise persistence_error(exc.orig or exc, "Inbox insert failed") from exc
        return bool(result.rowcount)

    async def record_many(self, consumer: str, messages: Sequence[tuple[str, str]]) -> set[str]:
        """Insert the inbox rows of ``(message_id, message_type)`` pairs; the ids that
        were not there (the others were handled already). One statement on PostgreSQL."""
        if not messages:
            return set()
        if self.connection.dialect.name != "postgresql":
            return {m for m, t in messages if await self.record(consumer, m, t)}
        self._message_id = messages[0][0]
        parameters = {
            "consumer": consumer,
            "ids": [m for m, _ in messages],
            "types": [t for _, t in messages],
            "received_at": utc_now(),
        }
        try:
            result = await self.connection.execute(_RECORD_MANY_PG, parameters)
        except DBAPIError as exc:
            raise persistence_error(exc.orig or exc, "Inbox insert failed") from exc
        return {row[0] for row in result.all()}

    def after_commit(self, hook: Callable[[], None]) -> None:
        """Run ``hook()`` once the transaction has committed."""
        self._hooks.append(hook)

    async def commit(self) -> None:
        """Commit; a connection lost during ``COMMIT`` is an unknown outcome.

        Raises:
            CommitOutcomeUnknownError: the commit was sent and no answer came
                (look the message up with ``has_handled``).
            PersistenceError: the commit was refused.
        """
        if not self._open:
            raise PersistenceError("The inbox transaction is closed")
        self._open = False
        try:
            await self.connection.commit()
        except DBAPIError as exc:
            await self._close()
            if exc.connection_invalidated:
                raise CommitOutcomeUnknownError(
                    "The connection was lost during the inbox commit",
                    message_id=self._message_id,
                ) from exc
            raise persistence_error(exc.orig or exc, "Inbox commit failed") from exc
        except BaseException:
            await self._close()
            raise
        await self._close()
        for hook in self._hooks:
            hook()

    async def rollback(self) -> None:
        """Discard the inbox row and the effects (a no-op once closed)."""
        if not self._open:
            return
        self._open = False
        try:
            await self.connection.rollback()
        finally:
            await self._close()

    async def _close(self) -> None:
        # A connection that died is discarded by the pool; closing it must not
        # hide the error that brought us here.
        with contextlib.suppress(DBAPIError, OSError):
            await self.connection.close()


class SQLAlchemyInboxStore:
    """Consumers' inboxes in the ``inbox`` table, on the consuming service's database.

    Args:
        engine: The consuming service's database (its effects' tables live there too).
    """

    def __init__(self, engine: AsyncEngine) -> None:
        if engine.dialect.name not in _INSERTS:
            raise ValueError(f"the inbox supports SQLite and PostgreSQL, not {engine.dialect.name}")
        self._engine = engine

    @property
    def engine(self) -> AsyncEngine:
        """The consuming service's database."""
        return self._engine

    async def begin(self) -> SQLAlchemyInboxTransaction:
        """A new transaction on a connection of its own (begun by its first statement,
        the inbox row's)."""
        try:
            connection = await self._engine.connect()
        except DBAPIError as exc:
            raise persistence_error(exc.orig or exc, "Inbox connection failed") from exc
        return SQLAlchemyInboxTransaction(connection)

    async def has_handled(self, consumer: str, message_id: str) -> bool:
        """Whether ``consumer`` committed the handling of ``message_id``."""
        statement = select(inbox.c.message_id).where(
            inbox.c.consumer == consumer, inbox.c.message_id == message_id
        )
        try:
            async with self._engine.connect() as conn:
                return (await conn.execute(statement)).first() is not None
        except DBAPIError as exc:
            raise persistence_error(exc.orig or exc, "Inbox read failed") from exc

    def __repr__(self) -> str:
        return f"SQLAlchemyInboxStore({self._engine.url.render_as_string(hide_password=True)!r})"
