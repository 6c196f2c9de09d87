"""The SQL event store: streams with versions 1..n and a gap-free global position."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import BigInteger, Text, bindparam, cast, func, select

from cqrs_ddd_core.adapters.sqlalchemy.engine import dialect_name
from cqrs_ddd_core.adapters.sqlalchemy.reads import Query, aware, fetch
from cqrs_ddd_core.adapters.sqlalchemy.tables import events
from cqrs_ddd_core.persistence.reading import DEFAULT_PAGE_SIZE, EventPages
from cqrs_ddd_core.persistence.records import StoredEvent
from cqrs_ddd_core.persistence.serialization import AppendBatch, encode_append
from cqrs_ddd_core.persistence.unit_of_work import require_uow

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from cqrs_ddd_core.adapters.sqlalchemy.plan import FlushPlan
    from cqrs_ddd_core.domain.messages import DomainEvent
    from cqrs_ddd_core.persistence.ports import UnitOfWork

__all__ = ["SQLAlchemyEventStore"]


# pg_snapshot_xmin(pg_current_snapshot()): the oldest transaction id still running.
_OLDEST_RUNNING = cast(cast(func.pg_snapshot_xmin(func.pg_current_snapshot()), Text), BigInteger)

_COLUMNS = (
    events.c.position,
    events.c.event_id,
    events.c.aggregate_type,
    events.c.aggregate_id,
    events.c.version,
    events.c.event_type,
    events.c.schema_version,
    events.c.payload,
    events.c.metadata,
    events.c.occurred_at,
    events.c.correlation_id,
    events.c.causation_id,
)


_LOAD_STREAM = Query(
    select(*_COLUMNS)
    .where(
        events.c.aggregate_type == bindparam("aggregate_type"),
        events.c.aggregate_id == bindparam("aggregate_id"),
        events.c.version >= bindparam("from_version"),
    )
    .order_by(events.c.version)
)
_AFTER = events.c.position > bindparam("after")
_BY_POSITION = select(*_COLUMNS).order_by(events.c.position).limit(bindparam("limit"))
_LATEST = select(func.coalesce(func.max(events.c.position), 0))
# PostgreSQL: only rows below the oldest running transaction are final (see
# cqrs_ddd_core.adapters.sqlalchemy.postgres); SQLite has one writer at a time.
# Rows written by other means, without a transaction id (an import), count as settled.
_SETTLED = func.coalesce(events.c.transaction_id, 0) < _OLDEST_RUNNING
_READ_ALL = {
    "sqlite": Query(_BY_POSITION.where(_AFTER)),
    "postgresql": Query(_BY_POSITION.where(_AFTER, _SETTLED)),
}
_LATEST_POSITION = {
    "sqlite": Query(_LATEST),
    "postgresql": Query(_LATEST.where(_SETTLED)),
}


def _json_object(value: Any) -> dict[str, Any]:
    if value == "{}":  # most events carry no metadata: skip the parser
        return {}
    return json.loads(value) if isinstance(value, str) else value  # type: ignore[no-any-return]


def _stored(row: Any) -> StoredEvent:
    payload, metadata = row[7], row[8]
    return StoredEvent(
        position=row[0],
        event_id=row[1],
        aggregate_type=row[2],
        aggregate_id=row[3],
        version=row[4],
        event_type=row[5],
        schema_version=row[6],
        payload=json.loads(payload) if isinstance(payload, str) else payload,
        metadata=_json_object(metadata),
        occurred_at=aware(row[9]),
        correlation_id=row[10],
        causation_id=row[11],
    )


class SQLAlchemyEventStore:
    """Event streams in the ``events`` table.

    Appends are staged on the unit of work and written when it commits; the
    stream's version is checked then, and a clash raises ``ConcurrencyError``.

    Args:
        engine: The database (the unit of work must use the same one).
    """

    collection = "events"

    def __init__(self, engine: AsyncEngine) -> None:
        dialect = dialect_name(engine)
        self._engine = engine
        self._read_all = _READ_ALL[dialect]
        self._latest_position = _LATEST_POSITION[dialect]

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def append(
        self,
        aggregate_type: str,
        aggregate_id: str,
        events: Sequence[DomainEvent],
        *,
        expected_version: int,
        uow: UnitOfWork | None = None,
    ) -> None:
        uow = require_uow(uow, "SQLAlchemyEventStore.append")
        if not events:
            return
        uow.stage(self, encode_append(aggregate_type, aggregate_id, events, expected_version))

    def add_to_plan(self, plan: FlushPlan, records: list[AppendBatch]) -> None:
        for aggregate_type, aggregate_id, expected_version, pending in records:
            plan.add_events(aggregate_type, aggregate_id, expected_version, pending)

    async def load_stream(
        self, aggregate_type: str, aggregate_id: str, *, from_version: int = 1
    ) -> list[StoredEvent]:
        rows = await fetch(
            self._engine,
            _LOAD_STREAM,
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            from_version=from_version,
        )
        return [_stored(row) for row in rows]

    def read_all(
        self,
        *,
        after_position: int = 0,
        limit: int | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> EventPages:
        """Every committed event above ``after_position``, by position, in pages
        of ``page_size`` (one query each; see :class:`EventPages`), never past a
        position that may still commit (on PostgreSQL, see :mod:`.postgres`)."""
        return EventPages(
            self._page, after_position=after_position, limit=limit, page_size=page_size
        )

    async def read_page(self, *, after_position: int = 0, limit: int) -> list[StoredEvent]:
        """Up to ``limit`` committed events above ``after_position`` (one query)."""
        return await self._page(after_position, limit)

    async def _page(self, after_position: int, limit: int) -> list[StoredEvent]:
        rows = await fetch(self._engine, self._read_all, after=after_position, limit=limit)
        return [_stored(row) for row in rows]

    async def latest_position(self) -> int:
        """The highest position :meth:`read_all` can return now (0 when empty)."""
        rows = await fetch(self._engine, self._latest_position)
        return int(rows[0][0])

    def __repr__(self) -> str:
        return f"SQLAlchemyEventStore({self._engine.url.render_as_string(hide_password=True)!r})"
