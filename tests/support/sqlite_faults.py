"""Faults for the SQLite writer's own ``sqlite3`` connection, on a real file.

:class:`HookedConnection` is a ``sqlite3.Connection`` whose ``execute``,
``executemany``, ``commit`` and ``rollback`` call :attr:`HookedConnection.hook`
before and after the real statement: a hook may raise (an injected fault,
before the statement ran or after it did) or block (to hold the writer's
thread inside a commit). :func:`hooked_writer` makes the writers opened
meanwhile use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cqrs_ddd_core.adapters.sqlalchemy import (
    SQLAlchemyEventStore,
    SQLAlchemyOutboxStore,
    SQLAlchemyStateRepository,
    SQLAlchemyUnitOfWork,
    sqlite_open,
)
from tests.support.accounts import Account
from tests.support.commits import message_for

__all__ = [
    "HookedConnection",
    "InjectedFault",
    "LoseConnection",
    "OpenAccount",
    "count_rows",
    "gate_on",
    "hooked_writer",
]

Hook = Callable[[str, str], None]


class InjectedFault(sqlite3.OperationalError):
    """The error a test injects (a disk I/O error, as SQLite would raise it)."""


class LoseConnection(Exception):
    """Raised by a hook: the connection is lost right there (closed, statements
    finished first, as a dying process's would be); the caller sees InjectedFault."""


class HookedConnection(sqlite3.Connection):
    """A real connection that lets a test act before and after each statement."""

    hook: Hook | None = None  # (when: "before" | "after", statement)

    def _call(self, when: str, sql: str, cursor: sqlite3.Cursor | None = None) -> None:
        hook = type(self).hook
        if hook is None:
            return
        try:
            hook(when, sql.strip())
        except BaseException as exc:
            # As SQLite failing there would: no statement is left running.
            if cursor is not None:
                with contextlib.suppress(sqlite3.Error):
                    cursor.close()
            if isinstance(exc, LoseConnection):
                with contextlib.suppress(sqlite3.Error):
                    self.close()  # closing rolls back what it held
                raise InjectedFault(f"disk I/O error (injected: connection lost {exc})") from None
            raise

    def _after(self, sql: str, cursor: sqlite3.Cursor) -> sqlite3.Cursor:
        self._call("after", sql, cursor)
        return cursor

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        self._call("before", sql)
        return self._after(sql, super().execute(sql, parameters))

    def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
        self._call("before", sql)
        return self._after(sql, super().executemany(sql, parameters))

    def commit(self) -> None:
        self._call("before", "COMMIT")
        super().commit()
        self._call("after", "COMMIT")

    def rollback(self) -> None:
        self._call("before", "ROLLBACK")
        super().rollback()
        self._call("after", "ROLLBACK")


def hooked_writer(
    monkeypatch: pytest.MonkeyPatch, hook: Hook | None = None
) -> type[HookedConnection]:
    """Make the writers opened from now on use :class:`HookedConnection` with ``hook``."""

    class Hooked(HookedConnection):
        pass

    Hooked.hook = hook
    monkeypatch.setattr(sqlite_open, "CONNECTION_FACTORY", Hooked)
    return Hooked


def gate_on(prefix: str, nth: int = 1) -> tuple[Hook, asyncio.Future[None], threading.Event]:
    """A hook that holds the writer's thread just before the ``nth`` statement
    starting with ``prefix``: ``(hook, reached, release)``; the future resolves
    when the thread is held, the event lets it go on."""
    loop = asyncio.get_running_loop()
    reached: asyncio.Future[None] = loop.create_future()
    release = threading.Event()
    armed = [True]
    seen = [0]

    def hook(when: str, sql: str) -> None:
        if when == "before" and armed[0] and sql.startswith(prefix):
            seen[0] += 1
            if seen[0] < nth:
                return
            armed[0] = False
            loop.call_soon_threadsafe(lambda: None if reached.done() else reached.set_result(None))
            release.wait(10)

    return hook, reached, release


class OpenAccount:
    """One "open account" command's writes with fixed ids (event, outbox message,
    state row), so that the same unit of work can be sent again."""

    def __init__(self, account_id: str) -> None:
        self.account_id = account_id
        self.account = Account.open(account_id, "ann")
        (self.event,) = self.account.collect_events()

    @property
    def event_ids(self) -> list[str]:
        return [self.event.event_id]

    async def stage(self, engine: AsyncEngine, uow: SQLAlchemyUnitOfWork) -> None:
        event = self.event
        await SQLAlchemyEventStore(engine).append(
            "Account", self.account_id, [event], expected_version=0, uow=uow
        )
        await SQLAlchemyOutboxStore(engine).enqueue([message_for(event, self.account_id)], uow=uow)
        SQLAlchemyStateRepository(Account, engine).save(self.account, uow=uow)

    async def commit(self, engine: AsyncEngine) -> SQLAlchemyUnitOfWork:
        uow = SQLAlchemyUnitOfWork(engine)
        await self.stage(engine, uow)
        await uow.commit()
        return uow


def count_rows(path: Path, account_id: str | None = None) -> tuple[int, int, int]:
    """``(events, outbox, state)`` rows in the file (of one account, if named),
    read on a connection of its own."""
    where, args = ("", ()) if account_id is None else (" WHERE aggregate_id = ?", (account_id,))
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return tuple(  # type: ignore[return-value]
            int(conn.execute(f"SELECT count(*) FROM {table}{where}", args).fetchone()[0])
            for table in ("events", "outbox", "aggregate_state")
        )
