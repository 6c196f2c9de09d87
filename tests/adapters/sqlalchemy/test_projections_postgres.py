"""PostgreSQL projection runners: woken by NOTIFY, one active per projection, standby takeover."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest
from sqlalchemy import Column, MetaData, String, Table, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cqrs_ddd_advanced_core.projections import Projection, ProjectionRunner
from cqrs_ddd_core.adapters.sqlalchemy import (
    SQLAlchemyEventStore,
    SQLAlchemyProjectionStore,
    SQLAlchemyUnitOfWork,
    create_engine,
)
from cqrs_ddd_core.adapters.sqlalchemy.projections import lock_key
from cqrs_ddd_core.persistence import StoredEvent
from tests.support.accounts import Opened
from tests.support.projections import create_read_model, sql_projection, sql_read_model

ROOT = Path(__file__).resolve().parents[3]
# The sessions holding a projection's advisory lock (a bigint key is split in two).
HOLDERS = "locktype = 'advisory' AND granted AND ((classid::bigint << 32) | objid::bigint) = :key"

pytestmark = pytest.mark.postgres

_meta = MetaData()
applied_by = Table(
    "test_applied_by",
    _meta,
    Column("event_id", String(255), primary_key=True),
    Column("runner", String(32), nullable=False),
)


@pytest.fixture
async def engine(pg_engine: AsyncEngine) -> AsyncEngine:
    async with pg_engine.begin() as conn:
        await conn.run_sync(_meta.drop_all)
        await conn.run_sync(_meta.create_all)
    return pg_engine


def recording(runner: str) -> Projection[AsyncConnection]:
    projection = Projection[AsyncConnection]("recorded")

    @projection.on("Opened")
    async def opened(event: StoredEvent, tx: AsyncConnection) -> None:
        await tx.execute(applied_by.insert().values(event_id=event.event_id, runner=runner))

    return projection


async def open_account(engine: AsyncEngine, account: str) -> None:
    uow = SQLAlchemyUnitOfWork(engine)
    await SQLAlchemyEventStore(engine).append(
        "Account", account, [Opened(owner=account)], expected_version=0, uow=uow
    )
    await uow.commit()


async def applied(engine: AsyncEngine) -> dict[str, str]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(applied_by.c.event_id, applied_by.c.runner))
        return {row[0]: row[1] for row in rows}


async def until(engine: AsyncEngine, count: int, seconds: float = 30.0) -> dict[str, str]:
    """The applied events once there are ``count`` of them (bounded)."""
    async with asyncio.timeout(seconds):
        while len(found := await applied(engine)) < count:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    return found


def runner(
    engine: AsyncEngine, name: str, poll_interval: float
) -> ProjectionRunner[AsyncConnection]:
    return ProjectionRunner(
        recording(name),
        events=SQLAlchemyEventStore(engine),
        store=SQLAlchemyProjectionStore(engine, standby_interval=0.05),
        poll_interval=poll_interval,
    )


async def test_a_commit_that_inserts_events_wakes_a_waiting_runner(engine: AsyncEngine) -> None:
    stop = asyncio.Event()
    # Polling once an hour: only the NOTIFY from the events trigger can wake it in time.
    task = asyncio.ensure_future(runner(engine, "a", poll_interval=3600).run(stop))
    try:
        await open_account(engine, "first")
        await until(engine, 1)
        await open_account(engine, "second")
        assert len(await until(engine, 2, seconds=20)) == 2
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_one_runner_is_active_and_a_standby_takes_over_when_it_stops(
    engine: AsyncEngine, postgres_database_url: str
) -> None:
    other = create_engine(postgres_database_url)
    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    a = asyncio.ensure_future(runner(engine, "a", poll_interval=0.05).run(stop_a))
    tasks = [a]
    try:
        await open_account(engine, "one")
        await until(engine, 1)
        tasks.append(asyncio.ensure_future(runner(other, "b", poll_interval=0.05).run(stop_b)))
        for account in ("two", "three"):
            await open_account(engine, account)
        while_both = await until(engine, 3)
        assert set(while_both.values()) == {"a"}
        async with engine.connect() as conn:
            holders = (
                await conn.execute(
                    text(f"SELECT count(*) FROM pg_locks WHERE {HOLDERS}"),
                    {"key": lock_key("recorded") & 0xFFFFFFFFFFFFFFFF},
                )
            ).scalar_one()
        assert holders == 1

        stop_a.set()
        await asyncio.wait_for(a, 30)  # its session's connection closes: the lock is free
        await open_account(engine, "four")
        after = await until(engine, 4)

        assert [runner for event, runner in after.items() if event not in while_both] == ["b"]
    finally:
        stop_a.set()
        stop_b.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        await other.dispose()


@pytest.mark.slow
async def test_a_standby_takes_over_when_the_active_runner_process_is_sigkilled(
    engine: AsyncEngine, postgres_database_url: str
) -> None:
    await create_read_model(engine)
    store = SQLAlchemyProjectionStore(engine, standby_interval=0.05)
    inner = sql_projection()
    by_standby: list[int] = []
    standby = Projection[AsyncConnection]("account_totals")

    async def record(event: StoredEvent, tx: AsyncConnection) -> None:
        await inner.apply(event, tx)
        by_standby.append(event.position)

    for event_type in ("Opened", "Deposited"):
        standby.add(event_type, record)

    async def applied_up_to(position: int) -> None:
        async with asyncio.timeout(60):
            while await store.checkpoint("account_totals") < position:  # noqa: ASYNC110
                await asyncio.sleep(0.02)

    active = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.projection_worker",
        postgres_database_url,
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    stop = asyncio.Event()
    task: asyncio.Task[None] | None = None
    try:
        await open_account(engine, "one")
        await applied_up_to(1)  # the process holds the projection
        runner = ProjectionRunner(
            standby, events=SQLAlchemyEventStore(engine), store=store, poll_interval=0.05
        )
        task = asyncio.ensure_future(runner.run(stop))
        await open_account(engine, "two")
        await applied_up_to(2)
        assert by_standby == []  # standing by while the process is alive

        active.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(active.wait(), 30) == -signal.SIGKILL
        await open_account(engine, "three")
        await applied_up_to(3)

        assert by_standby == [3]
        assert (await sql_read_model(engine))[1] == [1, 2, 3]
    finally:
        if active.returncode is None:
            active.kill()
            await active.wait()
        stop.set()
        if task is not None:
            await asyncio.wait_for(task, 30)


async def test_a_runner_whose_session_connection_is_killed_takes_the_projection_again(
    engine: AsyncEngine,
) -> None:
    stop = asyncio.Event()
    task = asyncio.ensure_future(runner(engine, "a", poll_interval=3600).run(stop))
    try:
        await open_account(engine, "first")
        await until(engine, 1)
        async with engine.connect() as conn:
            # The server ends the session's connection (an admin, a failover, a proxy).
            killed = (
                await conn.execute(
                    text(f"SELECT pg_terminate_backend(pid) FROM pg_locks WHERE {HOLDERS}"),
                    {"key": lock_key("recorded") & 0xFFFFFFFFFFFFFFFF},
                )
            ).all()
        assert killed == [(True,)]
        await open_account(engine, "second")

        # Polling once an hour: only a new session (lock and LISTEN again) applies it in time.
        assert set((await until(engine, 2, seconds=30)).values()) == {"a"}
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
