"""``cqrs-ddd sagas``: list, inspect and resume the sagas of a real SQLite database."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from cqrs_ddd_advanced_core.adapters.sqlalchemy import SQLAlchemySagaStore
from cqrs_ddd_advanced_core.cli.main import main
from cqrs_ddd_advanced_core.cli.sagas import demo_saga_manager
from cqrs_ddd_advanced_core.demo.domain import OrderConfirmed
from cqrs_ddd_advanced_core.demo.sagas import declines
from cqrs_ddd_advanced_core.sagas import SagaStatus, StartSaga
from cqrs_ddd_core.adapters.sqlalchemy import create_engine, create_tables


def confirmed(order_id: str) -> OrderConfirmed:
    return OrderConfirmed(total_cents=100, aggregate_id=order_id, aggregate_type="Order")


async def _prepare(url: str) -> None:
    """One completed saga, one compensated (declined), one left before its first step."""
    engine = create_engine(url)
    try:
        await create_tables(engine)
        manager = demo_saga_manager(engine)
        await manager.handle(confirmed(OK))
        await manager.handle(confirmed(DECLINED))
        await manager.mediator.send(StartSaga(saga_type="fulfilment", event=confirmed(MID)))
    finally:
        await engine.dispose()


def _first(prefix: str, *, declined: bool) -> str:
    """The first id with ``prefix`` the demo's payment service declines (or accepts):
    it declines a stable fifth of the orders."""
    return next(f"{prefix}-{i}" for i in range(1000) if declines(f"{prefix}-{i}", 0.2) == declined)


OK, DECLINED, MID = (
    _first("ok", declined=False),
    _first("bad", declined=True),
    _first("mid", declined=False),
)


async def _status(url: str, saga_id: str) -> SagaStatus | None:
    engine = create_engine(url)
    try:
        state = await SQLAlchemySagaStore(engine).find(saga_id)
        return None if state is None else state.status
    finally:
        await engine.dispose()


@pytest.fixture
def database(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    asyncio.run(_prepare(url))
    return url


def test_list_shows_every_saga_with_its_status(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sagas", "list", "--database-url", database, "--json"]) == 0

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    statuses = {line["key"]: line["status"] for line in lines}
    assert statuses.pop(OK) == "completed"
    assert statuses.pop(MID) == "running"
    assert list(statuses.values()) == ["compensated"]


def test_list_filters_by_status(database: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sagas", "list", "--database-url", database, "--status", "running"]) == 0

    out = capsys.readouterr().out
    assert f"fulfilment:{MID}" in out
    assert OK not in out
    assert out.rstrip().endswith("1 saga(s)")


def test_inspect_prints_the_stored_state(database: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sagas", "inspect", f"fulfilment:{OK}", "--database-url", database]) == 0

    state = json.loads(capsys.readouterr().out)
    assert state["completed_steps"] == ["reserve", "pay", "ship"]
    assert state["version"] == 4


def test_inspecting_a_missing_saga_exits_1(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sagas", "inspect", "fulfilment:nope", "--database-url", database]) == 1

    assert "no saga 'fulfilment:nope'" in capsys.readouterr().err


def test_resume_carries_a_saga_on_from_its_last_commit(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sagas", "resume", f"fulfilment:{MID}", "--database-url", database]) == 0

    assert f"fulfilment:{MID}: completed" in capsys.readouterr().out
    assert asyncio.run(_status(database, f"fulfilment:{MID}")) is SagaStatus.COMPLETED


def test_resume_all_recovers_every_open_saga(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sagas", "resume", "--all", "--database-url", database]) == 0

    assert "recovered 1 saga(s)" in capsys.readouterr().out
    assert asyncio.run(_status(database, f"fulfilment:{MID}")) is SagaStatus.COMPLETED


def test_resume_with_an_app_that_cannot_be_loaded_exits_1(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["sagas", "resume", "--all", "--database-url", database, "--app", "nowhere:x"])

    assert code == 1
    assert "cannot load --app 'nowhere:x'" in capsys.readouterr().err


def test_resume_needs_ids_or_all(database: str) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["sagas", "resume", "--database-url", database])

    assert caught.value.code == 2
