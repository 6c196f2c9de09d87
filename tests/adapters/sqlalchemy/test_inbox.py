"""The inbox: a message id and the handler's effects commit together, once per consumer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Column, MetaData, String, Table, func, insert, select

from cqrs_ddd_core.adapters.memory import InMemoryInboxStore
from cqrs_ddd_core.adapters.sqlalchemy import SQLAlchemyInboxStore
from cqrs_ddd_core.exceptions import CommitOutcomeUnknownError, PersistenceError
from tests.support.backends import sqlite_engine
from tests.support.postgres import empty_pg_engine

app = MetaData()
charges = Table("charges", app, Column("message_id", String(64)), Column("consumer", String(64)))


class Inbox:
    def __init__(self, store: object) -> None:
        self.store = store
        self.memory_effects: list[tuple[str, str]] = []

    async def apply(self, tx: object, consumer: str, message_id: str) -> None:
        connection = tx.connection  # type: ignore[attr-defined]
        if connection is None:
            tx.after_commit(lambda: self.memory_effects.append((consumer, message_id)))  # type: ignore[attr-defined]
        else:
            await connection.execute(
                insert(charges).values(message_id=message_id, consumer=consumer)
            )

    async def effects(self) -> int:
        if isinstance(self.store, InMemoryInboxStore):
            return len(self.memory_effects)
        async with self.store.engine.connect() as conn:  # type: ignore[attr-defined]
            return int((await conn.execute(select(func.count()).select_from(charges))).scalar_one())


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def inbox(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Inbox]:
    if request.param == "memory":
        yield Inbox(InMemoryInboxStore())
        return
    if request.param == "sqlite":
        context = sqlite_engine(tmp_path)
    else:
        context = empty_pg_engine(request.getfixturevalue("postgres_database_url"))
    async with context as engine:
        async with engine.begin() as conn:
            await conn.run_sync(app.drop_all)
            await conn.run_sync(app.create_all)
        yield Inbox(SQLAlchemyInboxStore(engine))


async def handle(inbox: Inbox, consumer: str, message_id: str, *, fail: bool = False) -> bool:
    tx = await inbox.store.begin()  # type: ignore[attr-defined]
    try:
        if not await tx.record(consumer, message_id, "OrderPlaced"):
            await tx.rollback()
            return False
        await inbox.apply(tx, consumer, message_id)
        if fail:
            raise RuntimeError("handler failed")
    except BaseException:
        await tx.rollback()
        raise
    await tx.commit()
    return True


async def test_a_redelivered_message_is_recognised_and_has_no_second_effect(inbox: Inbox) -> None:
    assert await handle(inbox, "billing", "m1") is True
    assert await handle(inbox, "billing", "m1") is False
    assert await inbox.effects() == 1
    assert await inbox.store.has_handled("billing", "m1")  # type: ignore[attr-defined]


async def test_each_consumer_has_its_own_inbox(inbox: Inbox) -> None:
    assert await handle(inbox, "billing", "m1") is True
    assert await handle(inbox, "shipping", "m1") is True
    assert await inbox.effects() == 2


async def test_a_failing_handler_leaves_neither_the_inbox_row_nor_the_effects(
    inbox: Inbox,
) -> None:
    with pytest.raises(RuntimeError):
        await handle(inbox, "billing", "m1", fail=True)
    assert await inbox.effects() == 0
    assert not await inbox.store.has_handled("billing", "m1")  # type: ignore[attr-defined]
    assert await handle(inbox, "billing", "m1") is True  # the retry applies it
    assert await inbox.effects() == 1


async def test_a_closed_transaction_cannot_commit(inbox: Inbox) -> None:
    tx = await inbox.store.begin()  # type: ignore[attr-defined]
    await tx.record("billing", "m1", "OrderPlaced")
    await tx.rollback()
    with pytest.raises(PersistenceError, match="closed"):
        await tx.commit()


@pytest.mark.postgres
async def test_two_concurrent_deliveries_of_one_message_apply_it_once_on_postgres(
    postgres_database_url: str,
) -> None:
    async with empty_pg_engine(postgres_database_url) as engine:
        async with engine.begin() as conn:
            await conn.run_sync(app.drop_all)
            await conn.run_sync(app.create_all)
        box = Inbox(SQLAlchemyInboxStore(engine))
        first = await box.store.begin()  # type: ignore[attr-defined]
        assert await first.record("billing", "m1", "OrderPlaced")
        await box.apply(first, "billing", "m1")
        # The second delivery waits on the primary key until the first commits.
        second = asyncio.create_task(handle(box, "billing", "m1"))
        await asyncio.sleep(0.2)  # not synchronisation: the outcome holds either way
        assert not second.done()
        await first.commit()
        async with asyncio.timeout(30):
            assert await second is False
        assert await box.effects() == 1


@pytest.mark.postgres
async def test_a_connection_killed_before_the_commit_is_an_unknown_outcome_settled_by_lookup(
    postgres_database_url: str,
) -> None:
    async with empty_pg_engine(postgres_database_url) as engine:
        async with engine.begin() as conn:
            await conn.run_sync(app.drop_all)
            await conn.run_sync(app.create_all)
        box = Inbox(SQLAlchemyInboxStore(engine))
        tx = await box.store.begin()  # type: ignore[attr-defined]
        assert await tx.record("billing", "m1", "OrderPlaced")
        await box.apply(tx, "billing", "m1")
        pid = (await tx.connection.exec_driver_sql("SELECT pg_backend_pid()")).scalar()
        async with engine.connect() as killer:  # the server drops the connection
            await killer.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
        with pytest.raises(CommitOutcomeUnknownError) as caught:
            await tx.commit()
        assert caught.value.message_id == "m1"
        # Looking the id up settles it: not handled, so the redelivery applies it once.
        assert not await box.store.has_handled("billing", "m1")  # type: ignore[attr-defined]
        assert await handle(box, "billing", "m1") is True
        assert await box.effects() == 1
