"""docs/changelog.md tells a 0.1.0 user what autogenerate will find: it must be exactly that."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from cqrs_ddd_core.adapters.sqlalchemy import create_tables, metadata

CHANGELOG = Path(__file__).resolve().parents[2] / "docs" / "changelog.md"

# What 0.1.0 did not have, removed from today's schema to make a 0.1.0 database.
TO_0_1_0 = (
    "DROP TABLE inbox",
    "DROP TABLE snapshots",
    "DROP TABLE projection_checkpoints",
    "DROP INDEX ix_outbox_unpublished",
    "DROP INDEX ix_outbox_stuck",
    "CREATE INDEX ix_outbox_status_next_attempt_at ON outbox (status, next_attempt_at)",
    "ALTER TABLE outbox DROP COLUMN aggregate_version",
    "ALTER TABLE outbox DROP COLUMN schema_version",
)


def _describe(diff: object) -> str:
    assert isinstance(diff, tuple), diff  # (a list would be a column modification)
    kind = diff[0]
    if kind == "add_table":
        return f"new table `{diff[1].name}`"
    if kind == "add_column":
        return f"new nullable column `{diff[2]}.{diff[3].name}`"
    if kind == "add_index":
        return f"new partial index `{diff[1].name}`"
    if kind == "remove_index":
        return f"dropped index `{diff[1].name}`"
    raise AssertionError(f"a change the changelog does not list: {diff!r}")


def test_autogenerate_on_a_0_1_0_database_finds_what_the_changelog_lists(tmp_path: Path) -> None:
    async def diff() -> list[str]:
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")
        try:
            await create_tables(engine)
            async with engine.begin() as conn:
                for statement in TO_0_1_0:
                    await conn.execute(text(statement))
            async with engine.connect() as conn:
                found = await conn.run_sync(
                    lambda sync: compare_metadata(MigrationContext.configure(sync), metadata)
                )
        finally:
            await engine.dispose()
        return sorted(_describe(d) for d in found)

    found = asyncio.run(diff())
    changelog = CHANGELOG.read_text()
    listed = sorted(
        line.split(" | ")[0].removeprefix("| ").split(" on ")[0]
        for line in changelog.splitlines()
        if line.startswith(("| new ", "| dropped "))
    )

    assert len(found) == 8
    assert found == listed
