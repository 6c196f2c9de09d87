"""Alembic migrations generated from the library's MetaData, the way
docs/tutorials/postgres-alembic.md tells an application to make them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from cqrs_ddd_core.adapters.sqlalchemy import create_tables

__all__ = ["alembic_config", "generate_migration", "schema_of", "tables_by_create_tables"]

TARGET = "from cqrs_ddd_core.adapters.sqlalchemy import metadata\ntarget_metadata = metadata\n"


def alembic_config(folder: Path, url: str) -> Config:
    """An Alembic project in ``folder`` (the async template) migrating ``url``."""
    config = Config(str(folder / "alembic.ini"))
    config.set_main_option("script_location", str(folder / "migrations"))
    config.set_main_option("sqlalchemy.url", url)
    return config


def generate_migration(folder: Path, url: str) -> Path:
    """``alembic init -t async``, point env.py at the library's MetaData, then
    ``alembic revision --autogenerate`` against the (empty) database at ``url``."""
    config = alembic_config(folder, url)
    command.init(config, str(folder / "migrations"), template="async")
    env = folder / "migrations" / "env.py"
    source = env.read_text()
    assert "target_metadata = None\n" in source
    env.write_text(source.replace("target_metadata = None\n", TARGET))
    command.revision(config, message="cqrs-ddd tables", autogenerate=True)
    (script,) = (folder / "migrations" / "versions").glob("*.py")
    return script


def _snapshot(connection: Connection) -> dict[str, Any]:
    inspector = inspect(connection)
    schema: dict[str, Any] = {}
    for table in sorted(inspector.get_table_names()):
        if table == "alembic_version":
            continue
        schema[table] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"], bool(c.get("identity")))
                for c in inspector.get_columns(table)
            ],
            "primary_key": inspector.get_pk_constraint(table),
            "unique": sorted(
                (u["name"], tuple(u["column_names"]))
                for u in inspector.get_unique_constraints(table)
            ),
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                for i in inspector.get_indexes(table)
            ),
        }
        if connection.dialect.name == "sqlite":
            sql = connection.execute(
                text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :name"),
                {"name": table},
            ).scalar_one()
            schema[table]["autoincrement"] = "AUTOINCREMENT" in sql.upper()
    return schema


def schema_of(url: str) -> dict[str, Any]:
    """Tables, columns, keys, constraints and indexes of the database at ``url``."""

    async def run() -> dict[str, Any]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(_snapshot)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def tables_by_create_tables(url: str) -> None:
    """What ``create_tables`` makes, in the (empty) database at ``url``."""

    async def run() -> None:
        engine = create_async_engine(url)
        try:
            await create_tables(engine)
        finally:
            await engine.dispose()

    asyncio.run(run())
