"""A PostgreSQL server for the suite: ``CQRS_BENCH_POSTGRES_URL`` or a throwaway cluster.

Without the variable the suite starts the test suite's throwaway cluster
(``tests/support/postgres.py``: ``initdb`` + ``pg_ctl`` on 127.0.0.1 and a free
port) in its **durable** configuration (``fsync`` and ``synchronous_commit``
on, as a production server), and stops it afterwards. Each run gets a
database of its own, dropped at the end.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import make_url

__all__ = ["ENV_URL", "Database", "database"]

ENV_URL = "CQRS_BENCH_POSTGRES_URL"


@dataclass(frozen=True)
class Database:
    """Where to connect, in the forms the drivers want."""

    url: str  # postgresql://user:password@host:port/name
    host: str
    port: int
    user: str
    password: str
    name: str
    server: str  # "throwaway durable cluster" or the URL's host


async def _admin(url: str, sql: str) -> Any:
    import asyncpg

    parsed = make_url(url)
    conn = await asyncpg.connect(
        host=parsed.host,
        port=parsed.port or 5432,
        user=parsed.username,
        password=parsed.password,
        database=parsed.database or "postgres",
    )
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


@asynccontextmanager
async def database() -> AsyncIterator[Database]:
    """A fresh database with the adapters' tables; raises ``RuntimeError`` if none can be had."""
    server: Any = None
    admin_url = os.environ.get(ENV_URL)
    where = "CQRS_BENCH_POSTGRES_URL"
    if not admin_url:
        try:
            from tests.support.postgres import PostgresServer, find_bindir
        except ImportError as exc:  # pytest (which it imports) or the repository is missing
            raise RuntimeError(
                f"set {ENV_URL}, or run from the repository with pytest installed: {exc}"
            ) from exc
        bindir = find_bindir()
        if bindir is None:
            raise RuntimeError(f"PostgreSQL is not installed (no initdb) and {ENV_URL} is unset")
        server = PostgresServer(bindir, durable=True).start()
        admin_url = server.url
        where = "throwaway cluster (fsync on, synchronous_commit on)"
    name = f"cqrs_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    try:
        await _admin(admin_url, f'CREATE DATABASE "{name}"')
        parsed = make_url(admin_url).set(database=name)
        url = parsed.render_as_string(hide_password=False)
        from cqrs_ddd_core.adapters.sqlalchemy import create_engine, create_tables

        engine = create_engine(url)
        try:
            await create_tables(engine)
        finally:
            await engine.dispose()
        try:
            yield Database(
                url=url,
                host=parsed.host or "127.0.0.1",
                port=parsed.port or 5432,
                user=parsed.username or "postgres",
                password=parsed.password or "",
                name=name,
                server=where,
            )
        finally:
            await _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        if server is not None:
            server.stop()


async def server_settings(url: str) -> dict[str, str]:
    """The durability settings the server runs with."""
    rows = await _admin(
        url,
        "SELECT name, setting FROM pg_settings WHERE name IN "
        "('fsync', 'synchronous_commit', 'wal_sync_method', 'server_version', "
        "'full_page_writes', 'max_connections')",
    )
    return {row["name"]: row["setting"] for row in rows}
