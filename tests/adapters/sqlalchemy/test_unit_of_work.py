"""The SQL unit of work refuses what would break its one transaction."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from cqrs_ddd_core.adapters.memory import InMemoryEventStore
from cqrs_ddd_core.adapters.sqlalchemy import (
    SQLAlchemyEventStore,
    SQLAlchemyUnitOfWork,
    create_engine,
)
from cqrs_ddd_core.exceptions import ConfigurationError, UnitOfWorkError
from tests.support.accounts import Opened
from tests.support.backends import Backend, sqlite_engine


async def test_a_store_of_another_adapter_cannot_stage_on_it(sqlite_db: AsyncEngine) -> None:
    uow = SQLAlchemyUnitOfWork(sqlite_db)
    await SQLAlchemyEventStore(sqlite_db).append(
        "Account", "a1", [Opened(owner="a")], expected_version=0, uow=uow
    )
    await InMemoryEventStore().append(
        "Account", "a2", [Opened(owner="b")], expected_version=0, uow=uow
    )

    with pytest.raises(UnitOfWorkError, match="same adapter"):
        await uow.commit()

    assert await SQLAlchemyEventStore(sqlite_db).read_all() == []


async def test_a_store_of_another_database_cannot_stage_on_it(
    sqlite_db: AsyncEngine, tmp_path: Path
) -> None:
    (tmp_path / "other").mkdir()
    async with sqlite_engine(tmp_path / "other") as other:
        uow = SQLAlchemyUnitOfWork(sqlite_db)
        await SQLAlchemyEventStore(other).append(
            "Account", "a1", [Opened(owner="a")], expected_version=0, uow=uow
        )
        with pytest.raises(UnitOfWorkError, match="one database"):
            await uow.commit()


async def test_it_accepts_an_async_sessionmaker(sqlite_db: AsyncEngine) -> None:
    uow = SQLAlchemyUnitOfWork.factory(async_sessionmaker(sqlite_db))()
    await SQLAlchemyEventStore(sqlite_db).append(
        "Account", "a1", [Opened(owner="a")], expected_version=0, uow=uow
    )
    await uow.commit()

    assert uow.engine is sqlite_db
    assert len(await SQLAlchemyEventStore(sqlite_db).read_all()) == 1
    assert "cqrs.db" in repr(uow)


def test_it_refuses_what_is_not_an_engine(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        SQLAlchemyUnitOfWork(async_sessionmaker())
    with pytest.raises(ConfigurationError):
        SQLAlchemyUnitOfWork("sqlite:///x.db")  # type: ignore[arg-type]


def test_the_factory_checks_the_database_once(tmp_path: Path) -> None:
    factory = SQLAlchemyUnitOfWork.factory(create_engine(f"sqlite:///{tmp_path / 'x.db'}"))
    assert isinstance(factory(), SQLAlchemyUnitOfWork)
    assert factory() is not factory()


async def test_a_commit_cancelled_during_its_flush_reports_what_the_database_did(
    db: Backend,
) -> None:
    ran: list[str] = []

    async def committed() -> None:
        ran.append("commit")

    async def rolled_back() -> None:
        ran.append("rollback")

    uow = db.uow_factory()
    uow.after_commit(committed)
    uow.after_rollback(rolled_back)
    await db.event_store.append("Account", "a1", [Opened(owner="a")], expected_version=0, uow=uow)
    commit = asyncio.create_task(uow.commit())
    await asyncio.sleep(0)  # the flush is on its way to the database

    commit.cancel()

    with pytest.raises(asyncio.CancelledError):
        await commit
    # The flush ran to its end: the events are there, and the unit of work says so.
    assert len(await db.event_store.read_all()) == 1
    assert ran == ["commit"]
    assert not uow.is_open


async def test_a_commit_cancelled_during_a_failing_flush_rolls_back(db: Backend) -> None:
    ran: list[str] = []

    async def rolled_back() -> None:
        ran.append("rollback")

    uow = db.uow_factory()
    uow.after_rollback(rolled_back)
    await db.event_store.append("Account", "a1", [Opened(owner="a")], expected_version=3, uow=uow)
    commit = asyncio.create_task(uow.commit())
    await asyncio.sleep(0)

    commit.cancel()

    with pytest.raises(asyncio.CancelledError):
        await commit
    assert ran == ["rollback"]
    assert await db.event_store.read_all() == []
