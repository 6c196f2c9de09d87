"""``cqrs-ddd projections status|rebuild`` on a SQLite file and on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from cqrs_ddd_advanced_core.cli.demo_read_model import ReadModelRun
from cqrs_ddd_advanced_core.cli.main import main
from cqrs_ddd_advanced_core.demo import Shop, Workload
from cqrs_ddd_advanced_core.demo.domain import UserPreferences
from cqrs_ddd_advanced_core.demo.read_model import read_customer_totals
from cqrs_ddd_core.adapters.sqlalchemy import (
    SQLAlchemyEventStore,
    SQLAlchemyOutboxStore,
    SQLAlchemyProjectionStore,
    SQLAlchemyStateRepository,
    SQLAlchemyUnitOfWork,
    create_engine,
    create_tables,
)


async def _seed(url: str) -> dict[str, object]:
    """A shop workload with the demo's read model kept; the read model as it ended."""
    engine = create_engine(url)
    try:
        await create_tables(engine)
        async with engine.begin() as conn:
            for table in ("demo_customer_orders", "demo_order_customers"):
                await conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
            await conn.exec_driver_sql("DELETE FROM projection_checkpoints")
        read_model = ReadModelRun(engine)
        await read_model.start()
        shop = Shop(
            uow_factory=SQLAlchemyUnitOfWork.factory(engine),
            event_store=SQLAlchemyEventStore(engine),
            outbox_store=SQLAlchemyOutboxStore(engine),
            preferences=SQLAlchemyStateRepository(UserPreferences, engine),
        )
        await Workload(shop, commands=80, concurrency=2, seed=5).run()
        assert (await read_model.finish())["matches_events"]
        return dict(await read_customer_totals(engine))
    finally:
        await engine.dispose()


async def _tamper(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("UPDATE demo_customer_orders SET placed = 1000")
    finally:
        await engine.dispose()


async def _totals(url: str) -> dict[str, object]:
    engine = create_engine(url)
    try:
        return dict(await read_customer_totals(engine))
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shop.db'}"
    found: str = request.getfixturevalue("postgres_database_url")
    return found


def test_status_lists_the_checkpoint_the_head_and_the_lag(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(_seed(url))
    capsys.readouterr()

    assert main(["projections", "status", "--json", f"--database-url={url}"]) == 0

    status = json.loads(capsys.readouterr().out)
    [row] = status["projections"]
    assert row["name"] == "customer_orders"
    assert row["checkpoint"] == row["head"] == status["head"] > 0
    assert row["lag"] == 0


def test_rebuild_restores_a_damaged_read_model_from_the_events(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = asyncio.run(_seed(url))
    asyncio.run(_tamper(url))
    assert asyncio.run(_totals(url)) != before

    assert main(["projections", "rebuild", "customer_orders", f"--database-url={url}"]) == 0

    assert asyncio.run(_totals(url)) == before
    assert "rebuilt customer_orders" in capsys.readouterr().out


def test_an_unknown_projection_is_refused_with_exit_code_1(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(_seed(url))

    assert main(["projections", "rebuild", "nope", f"--database-url={url}"]) == 1
    assert main(["projections", "status", "nope", f"--database-url={url}"]) == 1
    assert (
        main(
            [
                "projections",
                "rebuild",
                "nope",
                "--projection=cqrs_ddd_advanced_core.demo.read_model:customer_orders_projection",
                f"--database-url={url}",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "no code is known for projection 'nope'" in err
    assert "is projection 'customer_orders', not 'nope'" in err


@pytest.mark.postgres
def test_rebuild_waits_for_the_active_runner_and_gives_up_after_wait(
    postgres_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(_seed(postgres_database_url))

    async def rebuild_while_held() -> int:
        engine = create_engine(postgres_database_url)
        try:
            async with SQLAlchemyProjectionStore(engine).session("customer_orders") as held:
                await held.acquire()
                return await asyncio.to_thread(
                    main,
                    [
                        "projections",
                        "rebuild",
                        "customer_orders",
                        "--wait=0.5",
                        f"--database-url={postgres_database_url}",
                    ],
                )
        finally:
            await engine.dispose()

    assert asyncio.run(rebuild_while_held()) == 1
    assert "another runner held projection 'customer_orders'" in capsys.readouterr().err
