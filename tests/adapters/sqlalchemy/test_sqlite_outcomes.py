"""SQLite: every commit ends committed, refused (a typed error, the cause chained)
or unknown (CommitOutcomeUnknownError), and the reported outcome is what the file holds.

Faults are real: a missing directory, a file that is not a database, a value
SQLite cannot bind, and errors raised by the writer's own ``sqlite3``
connection before or after the real statement ran (``HookedConnection``).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cqrs_ddd_core.adapters.sqlalchemy import (
    SQLAlchemyEventStore,
    SQLAlchemyUnitOfWork,
    create_engine,
)
from cqrs_ddd_core.adapters.sqlalchemy.sqlite import flush_sqlite, writer_for
from cqrs_ddd_core.exceptions import (
    CommitOutcomeUnknownError,
    PersistenceError,
)
from tests.support.backends import sqlite_engine
from tests.support.commits import commit_new, open_the_writer, stage_command
from tests.support.sqlite_faults import (
    InjectedFault,
    OpenAccount,
    count_rows,
    hooked_writer,
)

MODES = ["NORMAL", "FULL"]  # inline on the loop, and on the writer's thread


@pytest.fixture(params=MODES)
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with sqlite_engine(tmp_path, request.param) as engine:
        yield engine


def path_of(engine: AsyncEngine) -> Path:
    return Path(str(engine.url.database))


def raise_at(prefix: str, when: str, *, times: int = 1) -> Any:
    """A hook raising an injected disk error at the statement starting with ``prefix``."""
    left = [times]

    def hook(at: str, sql: str) -> None:
        if at == when and sql.startswith(prefix) and left[0]:
            left[0] -= 1
            raise InjectedFault(f"disk I/O error (injected {when} {prefix})")

    return hook


# -- refused: typed, the cause chained --------------------------------------------


async def test_a_database_in_a_missing_directory_is_a_persistence_error(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'missing' / 'x.db'}")
    try:
        uow = SQLAlchemyUnitOfWork(engine)
        await stage_command(engine, uow, "a1")
        with pytest.raises(PersistenceError, match="Cannot open the SQLite database") as caught:
            await uow.commit()
        assert caught.value.__cause__ is not None
    finally:
        await engine.dispose()


async def test_a_file_that_is_not_a_database_is_a_persistence_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not a database file, not at all" * 200)
    engine = create_engine(f"sqlite:///{path}")
    try:
        uow = SQLAlchemyUnitOfWork(engine)
        await stage_command(engine, uow, "a1")
        with pytest.raises(PersistenceError) as caught:
            await uow.commit()
        assert "not a database" in str(caught.value)
        assert caught.value.__cause__ is not None
    finally:
        await engine.dispose()


async def test_an_id_sqlite_cannot_encode_is_a_persistence_error_with_its_cause(
    db: AsyncEngine,
) -> None:
    """Below any input rule: a lone surrogate reaching the driver never escapes raw."""
    await open_the_writer(db)
    plans: list[Any] = []
    uow = SQLAlchemyUnitOfWork(db)
    uow._flush = lambda _engine, plan, _timings: plans.append(plan) or asyncio.sleep(0)
    await stage_command(db, uow, "a2")
    await uow.commit()
    (plan,) = plans
    plan.events[0] = replace(plan.events[0], aggregate_id="bad\ud800id")

    with pytest.raises(PersistenceError) as caught:
        await flush_sqlite(db, plan, [])

    assert isinstance(caught.value.__cause__, UnicodeEncodeError)
    assert count_rows(path_of(db)) == (1, 1, 1)  # only a1
    await commit_new(db, "a3")  # the writer goes on


@pytest.mark.parametrize(
    ("prefix", "when"),
    [("INSERT INTO events", "before"), ("INSERT INTO outbox", "after"), ("BEGIN", "before")],
)
async def test_a_disk_error_in_a_commit_is_a_persistence_error_and_nothing_is_written(
    db: AsyncEngine, monkeypatch: pytest.MonkeyPatch, prefix: str, when: str
) -> None:
    hooked = hooked_writer(monkeypatch)
    await open_the_writer(db)
    hooked.hook = raise_at(prefix, when)

    uow = SQLAlchemyUnitOfWork(db)
    await stage_command(db, uow, "a2")
    with pytest.raises(PersistenceError) as caught:
        await uow.commit()

    assert isinstance(caught.value.__cause__, InjectedFault)
    assert count_rows(path_of(db), "a2") == (0, 0, 0)
    await commit_new(db, "a3")
    assert count_rows(path_of(db), "a3") == (1, 1, 1)


# -- a connection whose ROLLBACK failed is discarded ------------------------------


async def test_a_failed_rollback_discards_the_connection_and_the_writer_recovers(
    db: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flush fails, then its ROLLBACK fails too: the connection would stay inside
    its transaction, holding the write lock, and every later commit (of this and
    every other process) would hang. It is closed instead; the lock is free."""
    hooked = hooked_writer(monkeypatch)
    await open_the_writer(db)
    thread = writer_for(db).thread
    assert thread is not None
    old = thread.connection
    failures = [raise_at("INSERT INTO outbox", "before"), raise_at("ROLLBACK", "before")]

    def hook(when: str, sql: str) -> None:
        for failure in failures:
            failure(when, sql)

    hooked.hook = hook
    uow = SQLAlchemyUnitOfWork(db)
    await stage_command(db, uow, "a2")
    with pytest.raises(PersistenceError):
        await uow.commit()
    hooked.hook = None

    other = sqlite3.connect(path_of(db), timeout=0, isolation_level=None)
    with contextlib.closing(other):
        other.execute("BEGIN IMMEDIATE")  # another process gets the lock at once
        other.execute("ROLLBACK")
    assert old is not None
    with pytest.raises(sqlite3.ProgrammingError):
        old.execute("SELECT 1")  # closed
    await commit_new(db, "a3")  # on a fresh connection
    assert thread.connection is not old
    assert count_rows(path_of(db), "a2") == (0, 0, 0)
    assert count_rows(path_of(db), "a3") == (1, 1, 1)


# -- unknown: COMMIT failed; the event ids tell --------------------------------------


async def test_a_commit_that_failed_after_it_was_stored_is_reported_committed(
    db: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    hooked = hooked_writer(monkeypatch)
    await open_the_writer(db)
    hooked.hook = raise_at("COMMIT", "after")
    ran: list[str] = []
    uow = SQLAlchemyUnitOfWork(db)

    async def after_commit() -> None:
        ran.append("commit")

    uow.after_commit(after_commit)
    await stage_command(db, uow, "a2")
    await uow.commit()  # the error came after the commit: the ids are stored

    assert ran == ["commit"]
    assert count_rows(path_of(db), "a2") == (1, 1, 1)


async def test_a_commit_that_failed_before_it_was_stored_is_reported_refused(
    db: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    hooked = hooked_writer(monkeypatch)
    await open_the_writer(db)
    hooked.hook = raise_at("COMMIT", "before")
    uow = SQLAlchemyUnitOfWork(db)
    await stage_command(db, uow, "a2")

    with pytest.raises(PersistenceError, match="nothing was stored") as caught:
        await uow.commit()

    assert not isinstance(caught.value, CommitOutcomeUnknownError)
    assert isinstance(caught.value.__cause__, InjectedFault)
    assert count_rows(path_of(db), "a2") == (0, 0, 0)


@pytest.mark.parametrize("stored", [True, False])
async def test_a_commit_whose_outcome_cannot_be_learnt_raises_commit_outcome_unknown(
    db: AsyncEngine, monkeypatch: pytest.MonkeyPatch, stored: bool
) -> None:
    """COMMIT fails and so does every look-up of the event ids (on this connection
    and on a fresh one): the error says so, carrying the ids, whether or not the
    file holds the commit; it never claims a commit it could not see."""
    hooked = hooked_writer(monkeypatch)
    await open_the_writer(db)
    commit_fault = raise_at("COMMIT", "after" if stored else "before")

    def hook(when: str, sql: str) -> None:
        commit_fault(when, sql)
        if sql.startswith("SELECT count(*) FROM events WHERE event_id"):
            raise InjectedFault("disk I/O error (injected look-up)")

    hooked.hook = hook
    account = OpenAccount("a2")
    uow = SQLAlchemyUnitOfWork(db)
    await account.stage(db, uow)
    with pytest.raises(CommitOutcomeUnknownError) as caught:
        await uow.commit()

    assert caught.value.event_ids == tuple(account.event_ids)
    assert isinstance(caught.value.__cause__, InjectedFault)
    assert count_rows(path_of(db), "a2") == ((1, 1, 1) if stored else (0, 0, 0))
    hooked.hook = None
    await account.commit(db)  # sent again: applied once
    assert count_rows(path_of(db), "a2") == (1, 1, 1)


@pytest.mark.parametrize("stored", [True, False])
async def test_a_commit_on_a_connection_lost_at_commit_is_looked_up_on_a_fresh_one(
    db: AsyncEngine, monkeypatch: pytest.MonkeyPatch, stored: bool
) -> None:
    hooked = hooked_writer(monkeypatch)
    await open_the_writer(db)
    thread = writer_for(db).thread
    assert thread is not None
    lost = thread.connection
    assert lost is not None

    def hook(when: str, sql: str) -> None:
        if sql == "COMMIT" and when == ("after" if stored else "before"):
            hooked.hook = None
            lost.close()  # closing rolls back whatever was not committed
            raise InjectedFault("disk I/O error (injected: connection lost)")

    hooked.hook = hook
    ran: list[str] = []
    uow = SQLAlchemyUnitOfWork(db)

    async def after_commit() -> None:
        ran.append("commit")

    uow.after_commit(after_commit)
    await stage_command(db, uow, "a2")
    if stored:
        await uow.commit()
        assert ran == ["commit"]
    else:
        with pytest.raises(PersistenceError, match="nothing was stored"):
            await uow.commit()
    assert thread.connection is not lost  # looked up on a fresh connection
    assert count_rows(path_of(db), "a2") == ((1, 1, 1) if stored else (0, 0, 0))


async def test_a_writer_connection_stuck_on_an_old_snapshot_is_replaced(
    db: AsyncEngine,
) -> None:
    """A statement left unfinished on the writer's connection pins an old snapshot
    once another connection commits: BEGIN IMMEDIATE can then never succeed on it.
    The writer closes it and goes on with a fresh one instead of waiting in vain."""
    await open_the_writer(db)
    thread = writer_for(db).thread
    assert thread is not None
    leaked: list[Any] = []

    def leak(conn: sqlite3.Connection) -> None:
        cursor = conn.execute("SELECT event_id FROM events UNION ALL SELECT 'x'")
        cursor.fetchone()  # one row read, one left: the statement stays open
        leaked.append(cursor)

    await thread.submit(leak)
    with contextlib.closing(sqlite3.connect(path_of(db), isolation_level=None)) as other:
        other.execute("INSERT INTO outbox (message_id, message_type, payload, status, attempts, "
                      "created_at, trace_context) VALUES ('m', 't', '{}', 'pending', 0, "
                      "'2026-01-01 00:00:00.000000', '{}')")  # fmt: skip
    stuck = thread.connection

    # Inline, the commit moves to the thread and a fresh connection; on the
    # thread it is refused at once (not after the 30 s deadline), nothing written.
    refused = None
    try:
        await asyncio.wait_for(commit_new(db, "s1"), 5)
    except PersistenceError as exc:
        refused = exc
    await asyncio.wait_for(commit_new(db, "s2"), 5)

    assert thread.connection is not stuck
    assert count_rows(path_of(db), "s1") == ((0, 0, 0) if refused else (1, 1, 1))
    assert count_rows(path_of(db), "s2") == (1, 1, 1)


async def test_a_read_of_a_file_that_is_not_a_database_is_a_persistence_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not a database file, not at all" * 200)
    engine = create_engine(f"sqlite:///{path}")
    try:
        with pytest.raises(PersistenceError) as caught:
            await SQLAlchemyEventStore(engine).load_stream("Account", "a1")
        assert caught.value.__cause__ is not None
    finally:
        await engine.dispose()
