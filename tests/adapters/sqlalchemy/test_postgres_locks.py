"""PostgreSQL appends and their locks: never held while waiting on another transaction,
never left held after a failure; a refused flush is reported, grouping on or off."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from cqrs_ddd_core.adapters.sqlalchemy import (
    SQLAlchemyEventStore,
    SQLAlchemyUnitOfWork,
)
from cqrs_ddd_core.adapters.sqlalchemy.plan import FlushPlan
from cqrs_ddd_core.adapters.sqlalchemy.postgres_statement import build_flush
from cqrs_ddd_core.exceptions import ConcurrencyError, PersistenceError
from cqrs_ddd_core.persistence.serialization import encode_append
from tests.adapters.sqlalchemy.app import REFUSED_ID, install_refusal, remove_refusal
from tests.support.accounts import Opened
from tests.support.commits import commit_deposit, commit_new, stored_ids
from tests.support.postgres import empty_pg_engine

pytestmark = pytest.mark.postgres

EVENTS_LOCKS_HELD = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 AND granted"
)


@pytest.fixture(params=[1, 8], ids=["alone", "grouped"])
async def engine(
    request: pytest.FixtureRequest, postgres_database_url: str
) -> AsyncIterator[AsyncEngine]:
    async with empty_pg_engine(postgres_database_url, postgres_commit_batch=request.param) as e:
        yield e


async def scalar(engine: AsyncEngine, sql: str) -> int:
    async with engine.connect() as conn:
        value: int = (await conn.execute(text(sql))).scalar_one()
        return value


async def test_a_conflict_inside_the_events_lock_leaves_the_lock_released(
    engine: AsyncEngine,
) -> None:
    await commit_new(engine, "a1")

    with pytest.raises(ConcurrencyError):  # version 1 again: fails inside the lock
        await commit_deposit(engine, "a1", expected=0)

    assert await scalar(engine, EVENTS_LOCKS_HELD) == 0


async def test_a_duplicate_event_id_inside_the_events_lock_leaves_the_lock_released(
    engine: AsyncEngine,
) -> None:
    event = Opened(owner="a")
    store = SQLAlchemyEventStore(engine)
    uow = SQLAlchemyUnitOfWork(engine)
    await store.append("Account", "a1", [event], expected_version=0, uow=uow)
    await uow.commit()

    uow = SQLAlchemyUnitOfWork(engine)
    await store.append("Account", "a2", [event], expected_version=0, uow=uow)
    with pytest.raises(PersistenceError):
        await uow.commit()

    assert await scalar(engine, EVENTS_LOCKS_HELD) == 0


async def test_a_refused_flush_is_reported_and_stores_nothing(engine: AsyncEngine) -> None:
    """With grouping off too: the command is never reported committed."""
    await commit_new(engine, "a1")
    await install_refusal(engine)
    try:
        with pytest.raises(ConcurrencyError):
            await commit_deposit(engine, "a1", expected=0)
        with pytest.raises(PersistenceError, match="injected fault at commit"):
            await commit_new(engine, REFUSED_ID)
    finally:
        await remove_refusal(engine)

    assert await stored_ids(engine) == ["a1"]


async def _wait_until_one_waits_for_a_lock(engine: AsyncEngine) -> None:
    """Until a server session waits for a lock (bounded)."""
    sql = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
    async with asyncio.timeout(10):
        while not await scalar(engine, sql):  # noqa: ASYNC110 - a server state, polled
            await asyncio.sleep(0.01)


async def test_a_stalled_transaction_on_one_stream_does_not_stall_appends_to_others(
    engine: AsyncEngine,
) -> None:
    # Another writer appended to stream A the adapter's way, in a transaction
    # that stalls before its commit (holding A's new row).
    plan = FlushPlan()
    plan.add_events(*encode_append("Account", "A", [Opened(owner="x")], 0))
    sql, args = build_flush(plan)
    async with engine.connect() as stalled:
        raw = await stalled.get_raw_connection()
        conn = raw.driver_connection
        assert conn is not None
        await conn.execute("BEGIN")
        await conn.fetchval(sql, *args)
        try:
            # An append to A waits for that transaction...
            blocked = asyncio.create_task(commit_deposit(engine, "A", expected=0))
            await _wait_until_one_waits_for_a_lock(engine)
            # ...without holding what appends to other streams need.
            await asyncio.wait_for(commit_new(engine, "B"), 10)
            assert not blocked.done()
        finally:
            await conn.execute("ROLLBACK")
        await asyncio.wait_for(blocked, 10)  # A's turn once the stalled one ended

    assert sorted(await stored_ids(engine)) == ["A", "B"]
    assert await scalar(engine, EVENTS_LOCKS_HELD) == 0
