"""THE PROOF: a projection runner SIGKILLed 20 times while 16 senders append 10,000 events.

On PostgreSQL, 16 concurrent senders commit 10,000 events (5 per commit) while
a projection runner process is started, SIGKILLed at a random moment of its
work, and started again, 20 times. Then a last runner catches up, and:

* every event position was applied exactly once: the read model's
  ``test_applied_events`` has a primary key on the event id and a unique
  position, so applying one twice would have failed its batch (and the final
  catch-up would raise), and it holds exactly the positions of the events;
* the read model equals a from-scratch rebuild (``ProjectionRunner.rebuild``).
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cqrs_ddd_advanced_core.projections import ProjectionRunner
from cqrs_ddd_core.adapters.sqlalchemy import (
    SQLAlchemyEventStore,
    SQLAlchemyProjectionStore,
    SQLAlchemyUnitOfWork,
)
from tests.support.accounts import Deposited, Opened
from tests.support.postgres import empty_pg_engine, postgres_database_url
from tests.support.projections import create_read_model, sql_projection, sql_read_model

__all__ = ["postgres_database_url"]

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
EVENTS = 10_000
SENDERS = 16
PER_COMMIT = 5
KILLS = 20


async def sender(engine: AsyncEngine, index: int, commits: int) -> None:
    store = SQLAlchemyEventStore(engine)
    account, version = f"acct-{index}", 0
    for commit in range(commits):
        uow = SQLAlchemyUnitOfWork(engine)
        events = [Opened(owner=account)] if version == 0 else []
        events += [Deposited(amount=index * 1000 + commit) for _ in range(PER_COMMIT - len(events))]
        await store.append("Account", account, events, expected_version=version, uow=uow)
        await uow.commit()
        version += len(events)


async def run_and_kill(url: str, rng: random.Random) -> int:
    """Start a runner process, SIGKILL it at a random moment of its work; returns its pid."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.projection_worker",
        url,
        "50",
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(60):
            assert (await process.stdout.readline()).strip() == b"started"
        # Random fault injection: the kill lands anywhere in the runner's batches.
        await asyncio.sleep(rng.uniform(0.2, 1.2))
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
        await asyncio.wait_for(process.wait(), 30)
    assert process.returncode == -signal.SIGKILL
    return process.pid


@pytest.mark.timeout(300)
async def test_a_runner_killed_20_times_applies_every_event_exactly_once(
    postgres_database_url: str,
) -> None:
    rng = random.Random(14)
    async with empty_pg_engine(postgres_database_url, pool_size=SENDERS + 4) as engine:
        await create_read_model(engine)
        store = SQLAlchemyProjectionStore(engine)
        checkpoints: list[int] = []

        async def kill_twenty_times() -> None:
            for _ in range(KILLS):
                await run_and_kill(postgres_database_url, rng)
                checkpoints.append(await store.checkpoint("account_totals"))

        commits = EVENTS // PER_COMMIT // SENDERS
        await asyncio.gather(
            kill_twenty_times(),
            *(sender(engine, index, commits) for index in range(SENDERS)),
        )

        events = SQLAlchemyEventStore(engine)
        head = await events.latest_position()
        total = await _count_events(engine)
        assert total == EVENTS
        # The killed runners made progress between them, and did not finish alone.
        assert len(checkpoints) == KILLS
        assert checkpoints[-1] > 0
        assert len(set(checkpoints)) > 1

        runner = ProjectionRunner(sql_projection(), events=events, store=store, batch_size=500)
        await runner.catch_up()
        totals, positions = await sql_read_model(engine)
        assert positions == await _positions(engine)  # none skipped, none twice
        assert len(positions) == EVENTS
        assert (await runner.status()).checkpoint == head

        await runner.rebuild()
        assert await sql_read_model(engine) == (totals, positions)


async def _count_events(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.exec_driver_sql("SELECT count(*) FROM events")).scalar_one())


async def _positions(engine: AsyncEngine) -> list[int]:
    async with engine.connect() as conn:
        rows = await conn.exec_driver_sql("SELECT position FROM events ORDER BY position")
        return [int(row[0]) for row in rows]
