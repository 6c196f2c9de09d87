"""THE PROOF: a projection runner SIGKILLed 20 times while 16 senders append 10,000 events.

On PostgreSQL, 20 times: while a projection runner process is active (and
the next one stands by on the advisory lock), 16 concurrent senders commit
the next 500 events (5 per commit), and the active runner is SIGKILLed at a
random moment (0.1-1 s in, while the senders commit or while it applies what
they committed); the standby takes over. 10,000 events in all. Then a last
runner catches up, and:

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
from typing import Any

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


class Sender:
    """One of the 16 senders: its own account, 5 events per commit."""

    def __init__(self, engine: AsyncEngine, index: int) -> None:
        self.store = SQLAlchemyEventStore(engine)
        self.engine = engine
        self.index = index
        self.account = f"acct-{index}"
        self.version = 0

    async def commit(self, commits: int) -> None:
        for _ in range(commits):
            uow = SQLAlchemyUnitOfWork(self.engine)
            events: list[Any] = [Opened(owner=self.account)] if self.version == 0 else []
            events += [
                Deposited(amount=self.index * 1000 + self.version)
                for _ in range(PER_COMMIT - len(events))
            ]
            await self.store.append(
                "Account", self.account, events, expected_version=self.version, uow=uow
            )
            await uow.commit()
            self.version += len(events)


async def runner_process(url: str) -> asyncio.subprocess.Process:
    """A runner process (tests/support/projection_worker.py), once it has started."""
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
    async with asyncio.timeout(60):
        assert (await process.stdout.readline()).strip() == b"started"
    return process


async def kill_at_random(process: asyncio.subprocess.Process, rng: random.Random) -> None:
    # Random fault injection: the kill lands anywhere in the runner's batches.
    await asyncio.sleep(rng.uniform(0.1, 1.0))
    process.send_signal(signal.SIGKILL)
    assert await asyncio.wait_for(process.wait(), 30) == -signal.SIGKILL


@pytest.mark.timeout(300)
async def test_a_runner_killed_20_times_applies_every_event_exactly_once(
    postgres_database_url: str,
) -> None:
    rng = random.Random(14)
    async with empty_pg_engine(postgres_database_url, pool_size=SENDERS + 4) as engine:
        await create_read_model(engine)
        store = SQLAlchemyProjectionStore(engine)
        senders = [Sender(engine, index) for index in range(SENDERS)]
        per_round = EVENTS // PER_COMMIT // KILLS  # commits in each runner's life
        checkpoints: list[int] = []
        # Each runner is started one round early: it stands by (advisory lock) while
        # the previous one runs, and takes over when that one is killed.
        current = await runner_process(postgres_database_url)
        processes = [current]
        try:
            for _ in range(KILLS):
                spare = asyncio.ensure_future(runner_process(postgres_database_url))
                # The senders append while this runner lives; it dies at a random moment.
                await asyncio.gather(
                    kill_at_random(current, rng),
                    *(
                        sender.commit(per_round // SENDERS + (i < per_round % SENDERS))
                        for i, sender in enumerate(senders)
                    ),
                )
                checkpoints.append(await store.checkpoint("account_totals"))
                current = await spare
                processes.append(current)
        finally:
            for process in processes:
                if process.returncode is None:
                    process.kill()
                    await process.wait()

        events = SQLAlchemyEventStore(engine)
        head = await events.latest_position()
        total = await _count_events(engine)
        assert total == EVENTS
        # The killed runners made progress, life after life.
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
