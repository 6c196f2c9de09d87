"""THE PROOF: sagas survive SIGKILL at random points.

A child process runs 1,000 order sagas (reserve stock, take payment, ship) on a
SQLite file or a PostgreSQL database; a fifth have their payment refused and
some cannot be shipped. The test kills it with SIGKILL at random moments,
restarts it (it recovers what was left open and carries on), and repeats until
a run finishes. Then, reading the
database: every saga is terminal, no step's effect was applied twice, and
exactly the started steps of the failed sagas were compensated, in reverse.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cqrs_ddd_advanced_core.adapters.sqlalchemy import SQLAlchemySagaStore
from cqrs_ddd_advanced_core.sagas import SagaStatus
from cqrs_ddd_core.adapters.sqlalchemy import create_engine
from tests.support.backends import sql_backend
from tests.support.orders import SKU, Ledger, Stock
from tests.support.postgres import empty_pg_engine, postgres_database_url
from tests.support.saga_crash_child import declined, order_id, unshippable

__all__ = ["postgres_database_url"]

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
TOTAL = 1000
KILLS = 6


class Child:
    """One run of the child; its stdout lines are collected by a thread."""

    def __init__(self, url: str) -> None:
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.done = threading.Event()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.saga_crash_child", url, str(TOTAL)],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.strip())
            if line.startswith("ready"):
                self.ready.set()
            elif line.startswith("done"):
                self.done.set()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)


async def _read_outcome(url: str) -> tuple[dict[str, object], dict[str, list[str]], dict]:
    engine = create_engine(url)
    try:
        backend = sql_backend(engine)
        sagas = {s.key: s for s in await SQLAlchemySagaStore(engine).list_sagas(limit=10 * TOTAL)}
        ledgers = {}
        for number in range(TOTAL):
            ledger = await backend.repository(Ledger).find(order_id(number))
            ledgers[order_id(number)] = [] if ledger is None else list(ledger.ops)
        stock = await backend.repository(Stock).find(SKU)
        reservations = {} if stock is None else dict(stock.reservations)
        return sagas, ledgers, reservations
    finally:
        await engine.dispose()


async def _empty(url: str) -> None:
    async with empty_pg_engine(url):
        pass


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sagas.db'}"
    url: str = request.getfixturevalue("postgres_database_url")
    asyncio.run(_empty(url))
    return url


@pytest.mark.timeout(300)
def test_sagas_killed_at_random_points_all_end_and_compensate_exactly_once(
    database_url: str,
) -> None:
    rng = random.Random(20261203)
    kills = 0
    deadline = time.monotonic() + 240
    while True:
        assert time.monotonic() < deadline, "the sagas did not finish in time"
        child = Child(database_url)
        assert child.ready.wait(60), "the child did not start"
        if kills < KILLS:
            if child.done.wait(rng.uniform(0.2, 2.5)):
                child.process.wait(timeout=30)
                break  # finished before the kill: nothing left to crash
            child.kill()
            kills += 1
            continue
        assert child.done.wait(180), "the last run did not finish"
        assert child.process.wait(timeout=30) == 0
        break
    assert kills >= 3, "the child must have been killed mid-run several times"

    sagas, ledgers, reservations = asyncio.run(_read_outcome(database_url))

    assert len(sagas) == TOTAL
    statuses = {key: s.status for key, s in sagas.items()}  # type: ignore[attr-defined]
    assert all(s in (SagaStatus.COMPLETED, SagaStatus.COMPENSATED) for s in statuses.values())
    for number in range(TOTAL):
        key = order_id(number)
        ops = ledgers[key]
        assert len(ops) == len(set(ops)), (key, ops)  # no effect applied twice
        if declined(number):  # payment refused: only the reservation was started
            assert statuses[key] is SagaStatus.COMPENSATED, key
            assert ops == ["reserve", "release"], (key, ops)
        elif unshippable(number):  # shipping refused: payment and stock undone, latest first
            assert statuses[key] is SagaStatus.COMPENSATED, key
            assert ops == ["reserve", "pay", "refund", "release"], (key, ops)
        else:
            assert statuses[key] is SagaStatus.COMPLETED, key
            assert ops == ["reserve", "pay", "ship"], (key, ops)
    completed = {k for k, s in statuses.items() if s is SagaStatus.COMPLETED}
    assert set(reservations) == completed  # every compensated saga left no stock held
