"""The demo's read model: kept by a projection while the workload runs, checked against events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cqrs_ddd_advanced_core.cli.demo_read_model import ReadModelRun
from cqrs_ddd_advanced_core.demo import Shop, Workload
from cqrs_ddd_advanced_core.demo.domain import UserPreferences
from cqrs_ddd_core.adapters.sqlalchemy import (
    SQLAlchemyEventStore,
    SQLAlchemyOutboxStore,
    SQLAlchemyStateRepository,
    SQLAlchemyUnitOfWork,
)
from tests.support.backends import sqlite_engine
from tests.support.postgres import empty_pg_engine


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    if request.param == "sqlite":
        async with sqlite_engine(tmp_path) as found:
            yield found
        return
    url = request.getfixturevalue("postgres_database_url")
    async with empty_pg_engine(url) as found:
        async with found.begin() as conn:
            await conn.exec_driver_sql("DROP TABLE IF EXISTS demo_customer_orders")
            await conn.exec_driver_sql("DROP TABLE IF EXISTS demo_order_customers")
        yield found


async def run_workload(engine: AsyncEngine, commands: int) -> None:
    shop = Shop(
        uow_factory=SQLAlchemyUnitOfWork.factory(engine),
        event_store=SQLAlchemyEventStore(engine),
        outbox_store=SQLAlchemyOutboxStore(engine),
        preferences=SQLAlchemyStateRepository(UserPreferences, engine),
    )
    await Workload(shop, commands=commands, concurrency=4, seed=7).run()


async def test_the_read_model_kept_during_the_workload_matches_the_events(
    engine: AsyncEngine,
) -> None:
    read_model = ReadModelRun(engine)
    await read_model.start()
    await run_workload(engine, 150)

    result: dict[str, Any] = await read_model.finish()

    assert result["matches_events"], result
    assert result["customers"] > 0
    assert result["checkpoint"] == result["head"] > 0


async def test_a_read_model_that_differs_from_the_events_is_reported(engine: AsyncEngine) -> None:
    read_model = ReadModelRun(engine)
    await read_model.start()
    await run_workload(engine, 60)
    await read_model.finish()
    async with engine.begin() as conn:
        await conn.exec_driver_sql("UPDATE demo_customer_orders SET placed = placed + 1")

    again = ReadModelRun(engine)
    await again.start()
    result = await again.finish()

    assert not result["matches_events"]
    assert result["mismatched"]
