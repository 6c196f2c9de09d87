"""SQLite: every wait is bounded (the write lock's deadline, cancellation, the queue)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cqrs_ddd_core.adapters.sqlalchemy import (
    SQLAlchemyUnitOfWork,
    create_engine,
    create_tables,
    sqlite_queue,
)
from cqrs_ddd_core.exceptions import (
    PersistenceError,
)
from tests.support.backends import sqlite_engine
from tests.support.commits import commit_new, open_the_writer, stage_command
from tests.support.sqlite_faults import (
    count_rows,
)

MODES = ["NORMAL", "FULL"]  # inline on the loop, and on the writer's thread


@pytest.fixture(params=MODES)
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with sqlite_engine(tmp_path, request.param) as engine:
        yield engine


def path_of(engine: AsyncEngine) -> Path:
    return Path(str(engine.url.database))


# -- bounded waits -------------------------------------------------------------------


async def test_a_full_queue_refuses_the_next_commit_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.adapters.sqlalchemy.test_sqlite_group_commit import hold_thread

    monkeypatch.setattr(sqlite_queue, "QUEUE_LIMIT", 2)
    async with sqlite_engine(tmp_path, "FULL") as engine:
        await open_the_writer(engine)
        release, blocked = await hold_thread(engine)
        leader = asyncio.create_task(commit_new(engine, "leader"))
        await asyncio.sleep(0.01)
        queued = [asyncio.create_task(commit_new(engine, f"q{i}")) for i in range(2)]
        await asyncio.sleep(0.01)

        uow = SQLAlchemyUnitOfWork(engine)
        await stage_command(engine, uow, "refused")
        with pytest.raises(PersistenceError, match="commits waiting"):
            await uow.commit()
        release.set()
        await blocked
        await asyncio.gather(leader, *queued)

        path = Path(str(engine.url.database))
        assert count_rows(path, "refused") == (0, 0, 0)
        assert count_rows(path, "q1") == (1, 1, 1)


async def test_the_busy_timeout_is_the_commit_deadline_for_the_write_lock(
    tmp_path: Path,
) -> None:
    path = tmp_path / "deadline.db"
    engine = create_engine(f"sqlite:///{path}", sqlite_busy_timeout=0.3)
    try:
        await create_tables(engine)
        await open_the_writer(engine)
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")  # another process holds the lock
            uow = SQLAlchemyUnitOfWork(engine)
            await stage_command(engine, uow, "a2")
            with pytest.raises(PersistenceError, match="locked"):
                await asyncio.wait_for(uow.commit(), 5)  # refused at 0.3 s, not at 5
            other.execute("ROLLBACK")
        assert count_rows(path, "a2") == (0, 0, 0)
    finally:
        await engine.dispose()


async def test_wait_for_returns_within_its_deadline_while_another_process_holds_the_lock(
    db: AsyncEngine,
) -> None:
    """Lone and queued commits alike: ``wait_for`` gets control back at its deadline
    (well within a second of it), their commits are never written, the writer goes on."""
    await open_the_writer(db)
    path = path_of(db)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")  # another process holds the lock (30 s timeout)
        loop = asyncio.get_running_loop()
        started = loop.time()
        outcomes = await asyncio.gather(
            *(asyncio.wait_for(commit_new(db, f"w{i}"), 0.3) for i in range(3)),
            return_exceptions=True,
        )
        returned = loop.time() - started
        other.execute("ROLLBACK")

    assert all(isinstance(o, TimeoutError) for o in outcomes)
    assert returned < 1.3
    await commit_new(db, "after")
    assert [count_rows(path, f"w{i}") for i in range(3)] == [(0, 0, 0)] * 3
    assert count_rows(path, "after") == (1, 1, 1)
