"""SQLite: the flush and the commit are one hop to the database thread.

These tests use an engine whose writer always hops (``sqlite_flush="thread"``,
what the default ``FULL`` does); the inline flush has its own tests
(``test_sqlite_inline_flush.py``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cqrs_ddd_core.adapters.sqlalchemy import (
    SQLAlchemyEventStore,
    SQLAlchemyUnitOfWork,
    create_engine,
    create_tables,
)
from cqrs_ddd_core.adapters.sqlalchemy.sqlite import writer_for
from cqrs_ddd_core.exceptions import ConcurrencyError
from tests.support.accounts import Account
from tests.support.backends import sqlite_engine
from tests.support.commits import commit_new, count_hops, open_the_writer, stage_command
from tests.support.sqlite_faults import gate_on, hooked_writer


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An engine whose writer flushes on its thread (this module's subject)."""
    async with sqlite_engine(tmp_path, flush="thread") as engine:
        yield engine


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every job sent to the writer's thread (and every aiosqlite hop of a read)."""
    return count_hops(monkeypatch)


async def test_a_commit_is_one_hop_to_the_database_thread(
    sqlite_db: AsyncEngine, hops: list[Any]
) -> None:
    uow = SQLAlchemyUnitOfWork(sqlite_db)
    await stage_command(sqlite_db, uow, "a1")
    await uow.commit()  # the first commit also opens the writer connection
    hops.clear()

    uow = SQLAlchemyUnitOfWork(sqlite_db)
    await stage_command(sqlite_db, uow, "a2")
    assert hops == []  # staging touches no database
    await uow.commit()

    assert len(hops) == 1
    assert [t.operation for t in uow.timings] == ["BEGIN", "INSERT", "INSERT", "INSERT", "COMMIT"]
    assert [t.collection for t in uow.timings][1:4] == ["events", "outbox", "aggregate_state"]
    assert {t.system for t in uow.timings} == {"sqlite"}


async def test_a_failed_commit_is_one_hop_too_and_leaves_no_transaction_open(
    sqlite_db: AsyncEngine, hops: list[Any]
) -> None:
    uow = SQLAlchemyUnitOfWork(sqlite_db)
    await stage_command(sqlite_db, uow, "a1")
    await uow.commit()
    hops.clear()

    uow = SQLAlchemyUnitOfWork(sqlite_db)
    await stage_command(sqlite_db, uow, "a1")
    with pytest.raises(ConcurrencyError):
        await uow.commit()

    assert len(hops) == 1
    assert uow.timings[-2].error_type == "cqrs_ddd_core.exceptions.ConcurrencyError"
    assert uow.timings[-1].operation == "ROLLBACK"
    thread = writer_for(sqlite_db).thread
    assert thread is not None
    assert thread.connection is not None
    assert not thread.connection.in_transaction


async def test_an_empty_commit_does_not_touch_the_database(
    sqlite_db: AsyncEngine, hops: list[Any]
) -> None:
    uow = SQLAlchemyUnitOfWork(sqlite_db)
    await uow.commit()

    assert hops == []
    assert uow.timings == []


async def test_dispose_closes_the_writer_and_a_later_commit_opens_a_new_one(
    sqlite_db: AsyncEngine,
) -> None:
    uow = SQLAlchemyUnitOfWork(sqlite_db)
    await stage_command(sqlite_db, uow, "a1")
    await uow.commit()
    thread = writer_for(sqlite_db).thread
    assert thread is not None

    await sqlite_db.dispose()

    assert thread.closed
    uow = SQLAlchemyUnitOfWork(sqlite_db)
    await stage_command(sqlite_db, uow, "a2")
    await uow.commit()
    assert writer_for(sqlite_db).thread is not thread
    assert len(await SQLAlchemyEventStore(sqlite_db).read_all()) == 2


async def test_writers_in_two_processes_wait_for_each_other(tmp_path: Path) -> None:
    """Two engines on one file stand for two processes: the busy timeout makes them queue."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first, second = create_engine(url), create_engine(url)
    try:
        await create_tables(first)

        async def commit(engine: AsyncEngine, account_id: str) -> None:
            uow = SQLAlchemyUnitOfWork(engine)
            await stage_command(engine, uow, account_id)
            await uow.commit()

        await asyncio.gather(*(commit(first if i % 2 else second, f"a{i}") for i in range(40)))

        events = await SQLAlchemyEventStore(first).read_all()
        assert len(events) == 40
        assert [e.position for e in events] == list(range(1, 41))
    finally:
        await first.dispose()
        await second.dispose()


async def test_a_read_is_one_hop_and_returns_its_connection_without_a_rollback(
    sqlite_db: AsyncEngine, hops: list[Any]
) -> None:
    store = SQLAlchemyEventStore(sqlite_db)
    await store.read_all()  # the pool opens its first connection
    hops.clear()

    assert await store.load_stream("Account", "a1") == []
    assert await store.latest_position() == 0

    assert len(hops) == 2


async def test_a_writer_thread_closed_behind_the_adapters_back_is_replaced_at_the_next_commit(
    sqlite_db: AsyncEngine,
) -> None:
    uow = SQLAlchemyUnitOfWork(sqlite_db)
    await stage_command(sqlite_db, uow, "a1")
    await uow.commit()
    thread = writer_for(sqlite_db).thread
    assert thread is not None
    thread.close()  # behind the adapter's back

    uow = SQLAlchemyUnitOfWork(sqlite_db)
    await stage_command(sqlite_db, uow, "a2")
    await uow.commit()  # nothing was sent to the closed one: a new writer takes it

    assert writer_for(sqlite_db).thread is not thread
    assert [e.aggregate_id for e in await SQLAlchemyEventStore(sqlite_db).read_all()] == [
        "a1",
        "a2",
    ]


async def _block_writer(engine: AsyncEngine) -> tuple[threading.Event, asyncio.Future[None]]:
    """Hold the writer's thread until the returned event is set (the future: that job)."""
    release = threading.Event()
    thread = writer_for(engine).thread
    assert thread is not None
    started = asyncio.get_running_loop().create_future()
    loop = asyncio.get_running_loop()

    def blocked(_conn: Any) -> None:
        loop.call_soon_threadsafe(started.set_result, None)
        release.wait(10)

    pending = asyncio.ensure_future(thread.submit(blocked))
    await started
    return release, pending


def _with_hooks(uow: SQLAlchemyUnitOfWork) -> list[str]:
    ran: list[str] = []

    async def after_commit() -> None:
        ran.append("commit")

    async def after_rollback() -> None:
        ran.append("rollback")

    uow.after_commit(after_commit)
    uow.after_rollback(after_rollback)
    return ran


async def _stage(engine: AsyncEngine, uow: SQLAlchemyUnitOfWork, *, committed: bool) -> None:
    if committed:
        await stage_command(engine, uow, "a2")
    else:  # a stale version: the flush rolls back
        await SQLAlchemyEventStore(engine).append(
            "Account", "a2", [Account.open("a2", "x").collect_events()[0]],
            expected_version=5, uow=uow,
        )  # fmt: skip


@pytest.mark.parametrize("cancels", [1, 3])
async def test_a_commit_cancelled_while_queued_leaves_at_once_and_writes_nothing(
    sqlite_db: AsyncEngine, cancels: int
) -> None:
    await open_the_writer(sqlite_db)
    uow = SQLAlchemyUnitOfWork(sqlite_db)
    ran = _with_hooks(uow)
    await _stage(sqlite_db, uow, committed=True)
    release, blocked = await _block_writer(sqlite_db)
    commit = asyncio.create_task(uow.commit())
    await asyncio.sleep(0)  # the flush is queued behind the blocked job
    for _ in range(cancels):
        commit.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(commit), 5)  # without waiting for the block
    assert not blocked.done()
    release.set()
    await blocked
    await commit_new(sqlite_db, "a3")  # the job behind the withdrawn one ran: it was skipped

    assert ran == ["rollback"]
    assert [e.aggregate_id for e in await SQLAlchemyEventStore(sqlite_db).read_all()] == [
        "a1",
        "a3",
    ]


async def _cancelled_while_written(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch, *, cancels: int, committed: bool
) -> tuple[list[str], SQLAlchemyUnitOfWork]:
    """Cancel a commit while the writer's thread is inside its transaction."""
    hooked = hooked_writer(monkeypatch)
    await open_the_writer(engine)
    # A stale version fails at the head check, before any insert.
    hook, reached, release = gate_on("INSERT INTO events" if committed else "SELECT")
    hooked.hook = hook
    uow = SQLAlchemyUnitOfWork(engine)
    ran = _with_hooks(uow)
    await _stage(engine, uow, committed=committed)
    commit = asyncio.create_task(uow.commit())
    await reached  # the thread holds the write lock and is writing it
    for _ in range(cancels):
        commit.cancel()
        await asyncio.sleep(0)
    assert not commit.done()  # being written: it waits for the answer
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await commit
    return ran, uow


@pytest.mark.parametrize("cancels", [1, 3])
async def test_a_commit_cancelled_while_being_written_reports_the_commit(
    sqlite_db: AsyncEngine, monkeypatch: pytest.MonkeyPatch, cancels: int
) -> None:
    ran, uow = await _cancelled_while_written(
        sqlite_db, monkeypatch, cancels=cancels, committed=True
    )

    assert ran == ["commit"]
    assert not uow.is_open
    assert uow.timings[-1].operation == "COMMIT"
    assert len(await SQLAlchemyEventStore(sqlite_db).read_all()) == 2


async def test_a_cancelled_commit_whose_flush_fails_rolls_back(
    sqlite_db: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran, _ = await _cancelled_while_written(sqlite_db, monkeypatch, cancels=2, committed=False)

    assert ran == ["rollback"]
    assert len(await SQLAlchemyEventStore(sqlite_db).read_all()) == 1


async def test_the_committed_cancellation_reaches_the_caller_at_its_next_await(
    sqlite_db: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    hooked = hooked_writer(monkeypatch)
    await open_the_writer(sqlite_db)
    hook, reached_insert, release = gate_on("INSERT INTO events")
    hooked.hook = hook
    reached: list[str] = []
    proceed = asyncio.Event()

    async def command() -> None:
        uow = SQLAlchemyUnitOfWork(sqlite_db)
        await stage_command(sqlite_db, uow, "a2")
        await uow.commit()
        reached.append("returned from commit")
        await proceed.wait()
        reached.append("went on")  # pragma: no cover - the cancellation stops it

    task = asyncio.create_task(command())
    await reached_insert
    task.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert reached == ["returned from commit"]
    assert task.cancelling() == 1


async def test_a_commit_on_the_open_writer_needs_no_task(
    sqlite_db: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cqrs_ddd_core.adapters.sqlalchemy import unit_of_work

    shielded: list[Any] = []
    original = unit_of_work._finish

    async def counting(flush: Any) -> None:
        shielded.append(flush)
        await original(flush)

    monkeypatch.setattr(unit_of_work, "_finish", counting)
    for account_id in ("a1", "a2", "a3"):
        uow = SQLAlchemyUnitOfWork(sqlite_db)
        await stage_command(sqlite_db, uow, account_id)
        await uow.commit()

    assert len(shielded) == 1  # only the first commit, which opened the writer


async def test_each_engine_keeps_its_own_writer_when_commits_alternate_between_two(
    tmp_path: Path,
) -> None:
    """``writer_for`` remembers the last engine's writer: it must never hand it to another."""
    first = create_engine(f"sqlite:///{tmp_path / 'first.db'}")
    second = create_engine(f"sqlite:///{tmp_path / 'second.db'}")
    try:
        await create_tables(first)
        await create_tables(second)
        for i in range(4):
            for engine in (first, second):
                uow = SQLAlchemyUnitOfWork(engine)
                await stage_command(engine, uow, f"a{i}")
                await uow.commit()

        assert writer_for(first) is writer_for(first)
        assert writer_for(first) is not writer_for(second)
        assert writer_for(second) is writer_for(second)
        assert len(await SQLAlchemyEventStore(first).read_all()) == 4
        assert len(await SQLAlchemyEventStore(second).read_all()) == 4
    finally:
        await first.dispose()
        await second.dispose()
