"""The contract suites run against every adapter: in-memory, SQLite (a file; its flush
inline and on the database thread) and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.backends import Backend, memory_backend, sql_backend, sqlite_engine
from tests.support.postgres import empty_pg_engine, postgres_database_url

__all__ = ["backend", "backend_kind", "postgres_database_url"]


@pytest.fixture(
    params=[
        "memory",
        "sqlite",  # synchronous=NORMAL: the writer flushes inline on the loop's thread
        "sqlite-full",  # the default, FULL: the flush hops to the aiosqlite thread
        pytest.param("postgresql", marks=pytest.mark.postgres),
    ]
)
def backend_kind(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    """The adapter's name and, for PostgreSQL, the session database's URL."""
    if request.param == "postgresql":
        return request.param, request.getfixturevalue("postgres_database_url")
    return request.param, None


@pytest.fixture
async def backend(backend_kind: tuple[str, str | None], tmp_path: Path) -> AsyncIterator[Backend]:
    kind, url = backend_kind
    if kind == "memory":
        yield memory_backend()
    elif kind in ("sqlite", "sqlite-full"):
        synchronous = "FULL" if kind == "sqlite-full" else "NORMAL"
        async with sqlite_engine(tmp_path, synchronous) as engine:
            yield sql_backend(engine)
    else:
        assert url is not None
        async with empty_pg_engine(url) as engine:
            yield sql_backend(engine)
