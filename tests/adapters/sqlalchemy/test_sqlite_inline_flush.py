"""SQLite: where the flush runs, and the inline flush on the event loop's thread.

At ``synchronous=NORMAL``/``OFF`` a WAL commit never waits on the disk, so
the writer runs the flush inline (no hop to the writer's thread); a write
lock held by another process must still never block the loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cqrs_ddd_core.adapters.sqlalchemy import (
    SQLAlchemyEventStore,
    SQLAlchemyUnitOfWork,
    create_engine,
    create_tables,
)
from cqrs_ddd_core.adapters.sqlalchemy.sqlite import writer_for
from cqrs_ddd_core.exceptions import ConcurrencyError, ConfigurationError, PersistenceError
from tests.support.backends import sqlite_engine
from tests.support.commits import commit_new, count_hops, stage_command


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every call queued on any aiosqlite connection's thread."""
    return count_hops(monkeypatch)


@pytest.fixture
async def inline_db(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """WAL + NORMAL with a 2 s busy timeout: the writer flushes inline."""
    engine = create_engine(
        f"sqlite:///{tmp_path / 'inline.db'}", sqlite_synchronous="NORMAL", sqlite_busy_timeout=2
    )
    try:
        await create_tables(engine)
        yield engine
    finally:
        await engine.dispose()


async def until(condition: Callable[[], bool]) -> None:
    """Wait until the writer's state satisfies ``condition`` (bounded: 30 s).

    A wait on a state, not on time: the writer offers no event to await, so
    the state is read again at each turn of the loop.
    """
    async with asyncio.timeout(30):
        while not condition():  # noqa: ASYNC110 (no event to wait on; bounded)
            await asyncio.sleep(0.001)


def hold_write_lock(path: Path, seconds: float) -> tuple[threading.Thread, threading.Event]:
    """Another "process": a plain sqlite3 connection holding the write lock for ``seconds``."""
    locked = threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            locked.set()
            time.sleep(seconds)
            conn.execute("COMMIT")
        finally:
            conn.close()

    thread = threading.Thread(target=hold)
    thread.start()
    return thread, locked


@pytest.mark.parametrize(
    ("synchronous", "flush", "inline"),
    [
        ("NORMAL", "auto", True),
        ("OFF", "auto", True),
        ("FULL", "auto", False),
        ("EXTRA", "auto", False),
        ("NORMAL", "thread", False),
        ("FULL", "loop", True),
    ],
)
async def test_where_the_flush_runs_follows_the_durability_unless_chosen(
    tmp_path: Path, hops: list[Any], synchronous: str, flush: str, inline: bool
) -> None:
    async with sqlite_engine(tmp_path, synchronous, flush) as engine:
        await commit_new(engine, "a1")  # opens the writer
        hops.clear()

        uow = await commit_new(engine, "a2")

        assert writer_for(engine).inline is inline
        assert len(hops) == (0 if inline else 1)
        assert [t.operation for t in uow.timings] == [
            "BEGIN", "INSERT", "INSERT", "INSERT", "COMMIT"
        ]  # fmt: skip
        assert [e.aggregate_id for e in await SQLAlchemyEventStore(engine).read_all()] == [
            "a1",
            "a2",
        ]


async def test_an_inline_conflict_rolls_back_and_leaves_no_transaction_open(
    inline_db: AsyncEngine,
) -> None:
    await commit_new(inline_db, "a1")

    uow = SQLAlchemyUnitOfWork(inline_db)
    await stage_command(inline_db, uow, "a1")  # "a1" exists: version 0 is stale
    with pytest.raises(ConcurrencyError):
        await uow.commit()

    assert uow.timings[-2].error_type == "cqrs_ddd_core.exceptions.ConcurrencyError"
    assert uow.timings[-1].operation == "ROLLBACK"
    assert not writer_for(inline_db).thread.connection.in_transaction
    assert len(await SQLAlchemyEventStore(inline_db).read_all()) == 1
    await commit_new(inline_db, "a2")  # the writer goes on
    assert len(await SQLAlchemyEventStore(inline_db).read_all()) == 2


async def test_another_process_holding_the_lock_never_blocks_the_loop(
    inline_db: AsyncEngine, tmp_path: Path, hops: list[Any]
) -> None:
    await commit_new(inline_db, "a1")
    hops.clear()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    holder, locked = hold_write_lock(tmp_path / "inline.db", 0.4)
    locked.wait(5)
    ticking = asyncio.create_task(ticker())
    try:
        started = time.perf_counter()
        uow = await commit_new(inline_db, "a2")  # waits for the lock on the thread
        waited = time.perf_counter() - started
    finally:
        ticking.cancel()
    holder.join()

    assert waited >= 0.2  # it did wait for the other writer...
    assert ticks >= 10  # ...while the loop went on running other tasks
    assert len(hops) == 1  # the flush moved to the database thread
    assert uow.timings[-1].operation == "COMMIT"
    hops.clear()
    await commit_new(inline_db, "a3")  # the lock is free again: inline once more
    assert hops == []
    events = await SQLAlchemyEventStore(inline_db).read_all()
    assert [e.aggregate_id for e in events] == ["a1", "a2", "a3"]


async def test_a_lock_held_past_the_busy_timeout_fails_cleanly_and_inline_resumes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "short.db"
    engine = create_engine(
        f"sqlite:///{path}", sqlite_synchronous="NORMAL", sqlite_busy_timeout=0.2
    )
    try:
        await create_tables(engine)
        await commit_new(engine, "a1")
        holder, locked = hold_write_lock(path, 1.0)
        locked.wait(5)

        uow = SQLAlchemyUnitOfWork(engine)
        await stage_command(engine, uow, "a2")
        with pytest.raises(PersistenceError, match="locked"):
            await uow.commit()
        holder.join()

        assert uow.timings[-2].error_type == "cqrs_ddd_core.exceptions.PersistenceError"
        conn = writer_for(engine).thread.connection
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 0  # inline again
        await commit_new(engine, "a3")
        events = await SQLAlchemyEventStore(engine).read_all()
        assert [e.aggregate_id for e in events] == ["a1", "a3"]  # nothing of a2
    finally:
        await engine.dispose()


async def test_a_commit_behind_a_waiting_one_queues_behind_it_on_the_thread(
    inline_db: AsyncEngine, tmp_path: Path, hops: list[Any]
) -> None:
    """The second commit must not run inline while the first waits on the thread:
    they keep their order and never use the connection from two threads."""
    await commit_new(inline_db, "a1")
    holder, locked = hold_write_lock(tmp_path / "inline.db", 0.3)
    locked.wait(5)
    hops.clear()

    first = asyncio.create_task(commit_new(inline_db, "a2"))
    # The first one tried inline and is waiting on the thread.
    await until(lambda: not writer_for(inline_db)._idle())
    second = asyncio.create_task(commit_new(inline_db, "a3"))
    await asyncio.gather(first, second)
    holder.join()

    assert len(hops) == 2  # both went to the thread
    assert writer_for(inline_db)._idle()
    events = await SQLAlchemyEventStore(inline_db).read_all()
    assert [e.aggregate_id for e in events] == ["a1", "a2", "a3"]


async def test_a_commit_cancelled_while_waiting_for_another_process_lock_returns_at_once(
    inline_db: AsyncEngine, tmp_path: Path
) -> None:
    """Another process holds the write lock for far longer than the caller's
    deadline: ``wait_for`` returns within its deadline (plus well under a
    second), the commit is never written, and the writer goes on."""
    await commit_new(inline_db, "a1")
    holder, locked = hold_write_lock(tmp_path / "inline.db", 1.5)
    locked.wait(5)
    ran: list[str] = []

    async def command() -> None:
        uow = SQLAlchemyUnitOfWork(inline_db)

        async def after_rollback() -> None:
            ran.append("rollback")

        uow.after_rollback(after_rollback)
        await stage_command(inline_db, uow, "a2")
        await uow.commit()

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(command(), 0.2)
    returned = time.monotonic() - started
    holder.join()
    await commit_new(inline_db, "a3")

    assert returned < 1.2  # the 0.2 s deadline, and well within a second of it
    assert ran == ["rollback"]
    events = await SQLAlchemyEventStore(inline_db).read_all()
    assert [e.aggregate_id for e in events] == ["a1", "a3"]  # a2 never written


def test_an_unknown_flush_mode_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="sqlite_flush"):
        create_engine("sqlite:///x.db", sqlite_flush="sometimes")  # type: ignore[arg-type]


async def test_an_unknown_flush_mode_on_a_hand_made_engine_fails_the_commit(
    tmp_path: Path,
) -> None:
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{tmp_path / 'own.db'}",
        execution_options={"sqlite_flush": "sometimes"},
    )
    try:
        await create_tables(engine)
        uow = SQLAlchemyUnitOfWork(engine)
        await stage_command(engine, uow, "a1")
        with pytest.raises(ConfigurationError, match="sqlite_flush"):
            await uow.commit()
        assert await SQLAlchemyEventStore(engine).read_all() == []
    finally:
        await engine.dispose()


async def test_an_inline_writer_leaves_wal_checkpoints_to_another_connection(
    inline_db: AsyncEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint syncs the database file (milliseconds): never on the loop.
    The writer does not checkpoint as part of a commit; every CHECKPOINT_EVERY
    commits it does on its thread, even when the commits run back to back, and
    the WAL restarts, so it stays bounded."""
    from cqrs_ddd_core.adapters.sqlalchemy import sqlite as sqlite_writer

    checkpoints: list[tuple[int, int, int]] = []
    original = sqlite_writer.passive_checkpoint
    writer_threads: set[int] = set()

    def counting(conn: sqlite3.Connection) -> tuple[int, int, int]:
        writer_threads.add(threading.get_ident())
        result = original(conn)
        checkpoints.append(result)
        return result

    monkeypatch.setattr(sqlite_writer, "passive_checkpoint", counting)
    monkeypatch.setattr(sqlite_writer, "CHECKPOINT_EVERY", 100)  # a shorter test
    commits = 10 * sqlite_writer.CHECKPOINT_EVERY
    for i in range(commits):
        await commit_new(inline_db, f"c{i}")
    await until(lambda: writer_for(inline_db)._idle())  # the last checkpoint finished

    conn = writer_for(inline_db).thread.connection
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    assert len(checkpoints) >= 3  # they ran while the commits went on
    assert all(busy == 0 and done == frames for busy, frames, done in checkpoints)  # complete
    assert threading.get_ident() not in writer_threads  # on the writer's thread, not the loop's
    wal = tmp_path / "inline.db-wal"
    # Without checkpoints the WAL would hold every commit (~9 pages of 4 KiB
    # each); restarted after a checkpoint, it is reused from its start.
    # (about CHECKPOINT_EVERY commits' worth: 4.3-4.5 MB here, against 37 MB for all)
    assert wal.stat().st_size < 3 * sqlite_writer.CHECKPOINT_EVERY * 9 * 4096
    assert len(await SQLAlchemyEventStore(inline_db).read_all(limit=10_000)) == commits


async def test_a_failed_checkpoint_is_logged_and_commits_go_on(
    inline_db: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cqrs_ddd_core.adapters.sqlalchemy import sqlite as sqlite_writer

    def failing(conn: sqlite3.Connection) -> tuple[int, int, int]:
        raise sqlite3.OperationalError("disk I/O error (injected)")

    monkeypatch.setattr(sqlite_writer, "passive_checkpoint", failing)
    monkeypatch.setattr(sqlite_writer, "CHECKPOINT_EVERY", 20)
    with structlog.testing.capture_logs() as logs:
        for i in range(sqlite_writer.CHECKPOINT_EVERY + 1):
            await commit_new(inline_db, f"c{i}")
        await asyncio.sleep(0.2)

    failed = [e for e in logs if e["event"] == "sqlite_checkpoint_failed"]
    assert len(failed) == 1
    assert failed[0]["error_type"] == "OperationalError"
    assert failed[0]["log_level"] == "warning"
    assert not writer_for(inline_db)._checkpointing  # the next one may run
    count = len(await SQLAlchemyEventStore(inline_db).read_all(limit=10_000))
    assert count == sqlite_writer.CHECKPOINT_EVERY + 1


async def test_a_writer_on_the_thread_keeps_sqlites_own_checkpoints(tmp_path: Path) -> None:
    async with sqlite_engine(tmp_path, "FULL") as engine:
        await commit_new(engine, "a1")
        conn = writer_for(engine).thread.connection
        assert not writer_for(engine).inline
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
