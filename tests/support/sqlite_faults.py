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
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

import pytest

from cqrs_ddd_core.adapters.sqlalchemy import sqlite_open

__all__ = ["HookedConnection", "InjectedFault", "gate_on", "hooked_writer"]

Hook = Callable[[str, str], None]


class InjectedFault(sqlite3.OperationalError):
    """The error a test injects (a disk I/O error, as SQLite would raise it)."""


class HookedConnection(sqlite3.Connection):
    """A real connection that lets a test act before and after each statement."""

    hook: Hook | None = None  # (when: "before" | "after", statement)

    def _call(self, when: str, sql: str) -> None:
        hook = type(self).hook
        if hook is not None:
            hook(when, sql.strip())

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        self._call("before", sql)
        cursor = super().execute(sql, parameters)
        self._call("after", sql)
        return cursor

    def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
        self._call("before", sql)
        cursor = super().executemany(sql, parameters)
        self._call("after", sql)
        return cursor

    def commit(self) -> None:
        self._call("before", "COMMIT")
        super().commit()
        self._call("after", "COMMIT")

    def rollback(self) -> None:
        self._call("before", "ROLLBACK")
        super().rollback()
        self._call("after", "ROLLBACK")


def hooked_writer(monkeypatch: pytest.MonkeyPatch, hook: Hook | None = None) -> type[HookedConnection]:
    """Make the writers opened from now on use :class:`HookedConnection` with ``hook``."""

    class Hooked(HookedConnection):
        pass

    Hooked.hook = hook
    monkeypatch.setattr(sqlite_open, "CONNECTION_FACTORY", Hooked)
    return Hooked


def gate_on(
    prefix: str,
) -> tuple[Hook, asyncio.Future[None], threading.Event]:
    """A hook that holds the writer's thread just before the first statement
    starting with ``prefix``: ``(hook, reached, release)``; the future resolves
    when the thread is held, the event lets it go on."""
    loop = asyncio.get_running_loop()
    reached: asyncio.Future[None] = loop.create_future()
    release = threading.Event()
    armed = [True]

    def hook(when: str, sql: str) -> None:
        if when == "before" and armed[0] and sql.startswith(prefix):
            armed[0] = False
            loop.call_soon_threadsafe(
                lambda: None if reached.done() else reached.set_result(None)
            )
            release.wait(10)

    return hook, reached, release
