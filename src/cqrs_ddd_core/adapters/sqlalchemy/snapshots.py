"""The SQL snapshot store: the latest snapshot of each stream, in ``snapshots``.

A snapshot is written in a transaction of its own (it is a cache of the
stream, taken after the events it summarises committed). One row per
stream; an upsert replaces it only with a snapshot at a higher version, so
two writers racing leave the newer one.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, delete, select
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError

from cqrs_ddd_core.adapters.sqlalchemy.engine import dialect_name
from cqrs_ddd_core.adapters.sqlalchemy.errors import persistence_error
from cqrs_ddd_core.adapters.sqlalchemy.plan import as_utc
from cqrs_ddd_core.adapters.sqlalchemy.reads import Query, aware, fetch
from cqrs_ddd_core.adapters.sqlalchemy.tables import snapshots
from cqrs_ddd_core.persistence.records import Snapshot

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["SQLAlchemySnapshotStore"]

_LATEST = Query(
    select(
        snapshots.c.version,
        snapshots.c.schema_version,
        snapshots.c.state,
        snapshots.c.created_at,
    ).where(
        snapshots.c.aggregate_type == bindparam("aggregate_type"),
        snapshots.c.aggregate_id == bindparam("aggregate_id"),
    )
)

_UPDATED = ("version", "schema_version", "state", "created_at")


def _upsert(dialect: str, values: dict[str, Any]) -> Any:
    """INSERT, or UPDATE the stream's row when the new version is higher."""
    keys = [snapshots.c.aggregate_type, snapshots.c.aggregate_id]
    if dialect == "postgresql":
        pg = postgres_insert(snapshots).values(values)
        return pg.on_conflict_do_update(
            index_elements=keys,
            set_={name: pg.excluded[name] for name in _UPDATED},
            where=pg.excluded.version > snapshots.c.version,
        )
    lite = sqlite_insert(snapshots).values(values)
    return lite.on_conflict_do_update(
        index_elements=keys,
        set_={name: lite.excluded[name] for name in _UPDATED},
        where=lite.excluded.version > snapshots.c.version,
    )


class SQLAlchemySnapshotStore:
    """Snapshots in the ``snapshots`` table (SQLite or PostgreSQL).

    Args:
        engine: The database (usually the event store's).
    """

    collection = "snapshots"

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._dialect = dialect_name(engine)

    @property
    def engine(self) -> AsyncEngine:
        """The database of the snapshots."""
        return self._engine

    async def save(self, snapshot: Snapshot) -> bool:
        """Store ``snapshot`` unless one at a higher version is stored already.

        Raises:
            PersistenceError: the database failed.
        """
        values: dict[str, Any] = {
            "aggregate_type": snapshot.aggregate_type,
            "aggregate_id": snapshot.aggregate_id,
            "version": snapshot.version,
            "schema_version": snapshot.schema_version,
            "state": snapshot.state,
            "created_at": as_utc(snapshot.created_at),
        }
        statement = _upsert(self._dialect, values)
        try:
            async with self._engine.begin() as conn:
                result = await conn.execute(statement)
        except DBAPIError as exc:
            raise persistence_error(exc.orig or exc, "Writing the snapshot failed") from exc
        return bool(result.rowcount)

    async def latest(self, aggregate_type: str, aggregate_id: str) -> Snapshot | None:
        """The stream's snapshot, or ``None``.

        Raises:
            PersistenceError: the database failed.
        """
        rows = await fetch(
            self._engine, _LATEST, aggregate_type=aggregate_type, aggregate_id=aggregate_id
        )
        if not rows:
            return None
        version, schema_version, state, created_at = rows[0]
        return Snapshot(
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            version=int(version),
            schema_version=int(schema_version),
            state=json.loads(state) if isinstance(state, str) else state,
            created_at=aware(created_at),
        )

    async def delete(self, aggregate_type: str, aggregate_id: str) -> None:
        """Forget the stream's snapshot.

        Raises:
            PersistenceError: the database failed.
        """
        statement = delete(snapshots).where(
            snapshots.c.aggregate_type == aggregate_type,
            snapshots.c.aggregate_id == aggregate_id,
        )
        try:
            async with self._engine.begin() as conn:
                await conn.execute(statement)
        except DBAPIError as exc:
            raise persistence_error(exc.orig or exc, "Deleting the snapshot failed") from exc

    def __repr__(self) -> str:
        return f"SQLAlchemySnapshotStore({self._engine.url.render_as_string(hide_password=True)!r})"
