"""Fixtures for the adapter tests: a real SQLite file and a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.backends import Backend, sql_backend, sqlite_engine
from tests.support.postgres import empty_pg_engine, pg_engine, postgres_database_url

__all__ = ["db", "db_kind", "pg_engine", "postgres_database_url", "sqlite_db"]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_kind(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    """The database's name and, for PostgreSQL, the session database's URL."""
    if request.param == "postgresql":
        return request.param, request.getfixturevalue("postgres_database_url")
    return request.param, None


@pytest.fixture
async def db(db_kind: tuple[str, str | None], tmp_path: Path) -> AsyncIterator[Backend]:
    """The SQL adapters on a SQLite file, then on PostgreSQL (tables empty)."""

    kind, url = db_kind
    if kind == "sqlite":
        async with sqlite_engine(tmp_path) as engine:
            yield sql_backend(engine)
        return
    assert url is not None
    async with empty_pg_engine(url) as engine:
        yield sql_backend(engine)


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An engine on a new SQLite file (WAL, synchronous=NORMAL), tables created."""
    async with sqlite_engine(tmp_path) as engine:
        yield engine
