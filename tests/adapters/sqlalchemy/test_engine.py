"""The engine factory: the URLs people type, SQLite's durability settings, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from cqrs_ddd_core.adapters.sqlalchemy import create_engine
from cqrs_ddd_core.adapters.sqlalchemy.engine import dialect_name
from cqrs_ddd_core.exceptions import ConfigurationError


async def pragma(engine: object, name: str) -> object:
    async with engine.connect() as conn:  # type: ignore[attr-defined]
        return (await conn.execute(text(f"PRAGMA {name}"))).scalar_one()


async def test_sqlite_runs_in_wal_mode_and_is_durable_by_default(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    try:
        assert engine.dialect.driver == "aiosqlite"
        assert await pragma(engine, "journal_mode") == "wal"
        assert await pragma(engine, "synchronous") == 2  # FULL
        assert await pragma(engine, "busy_timeout") == 30_000
    finally:
        await engine.dispose()


async def test_sqlite_synchronous_and_busy_timeout_are_configurable(tmp_path: Path) -> None:
    engine = create_engine(
        f"sqlite:///{tmp_path / 'app.db'}", sqlite_synchronous="NORMAL", sqlite_busy_timeout=2.5
    )
    try:
        assert await pragma(engine, "synchronous") == 1  # NORMAL
        assert await pragma(engine, "busy_timeout") == 2_500
    finally:
        await engine.dispose()


def test_postgresql_urls_get_the_asyncpg_driver() -> None:
    for url in ("postgresql://u:p@db/app", "postgres://u@db/app", "postgresql+asyncpg://db/app"):
        engine = create_engine(url)
        assert (engine.dialect.name, engine.dialect.driver) == ("postgresql", "asyncpg")
        assert dialect_name(engine) == "postgresql"


@pytest.mark.parametrize(
    "url",
    ["sqlite://", "sqlite:///:memory:", "sqlite:///file:x?mode=memory&uri=true", "mysql://db/app"],
)
def test_unsupported_or_in_memory_urls_are_refused(url: str) -> None:
    with pytest.raises(ConfigurationError):
        create_engine(url)


def test_an_unknown_synchronous_level_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="sqlite_synchronous"):
        create_engine(f"sqlite:///{tmp_path / 'x.db'}", sqlite_synchronous="SOMETIMES")  # type: ignore[arg-type]


def test_the_password_is_not_shown_in_errors() -> None:
    with pytest.raises(ConfigurationError) as caught:
        create_engine("mysql://user:secret@db/app")
    assert "secret" not in str(caught.value)
