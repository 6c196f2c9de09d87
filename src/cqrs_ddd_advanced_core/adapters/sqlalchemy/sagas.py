"""The SQL saga store: saga states in the ``aggregate_state`` table.

A saga's state is a versioned JSON row, which is exactly what the
``aggregate_state`` table holds and what the unit of work's flush already
writes with an optimistic version check, in the same statement (PostgreSQL)
or the same transaction (SQLite) as everything else the step staged. The
rows are kept under ``aggregate_type = "cqrs.saga"`` and ``aggregate_id =``
the saga id, so the table's primary key finds a saga by id and lists them.

Listings and due deadlines read every saga row and filter in Python (the
state is JSON): fine for thousands of sagas; keep terminal sagas pruned, or
add an expression index, beyond that.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import TYPE_CHECKING

from pydantic_core import PydanticSerializationError
from sqlalchemy import Text, bindparam, cast, select

from cqrs_ddd_advanced_core.sagas.state import SAGA_ROW_TYPE, SagaState, due_sagas, select_sagas
from cqrs_ddd_core.adapters.sqlalchemy.reads import Query, fetch
from cqrs_ddd_core.adapters.sqlalchemy.tables import aggregate_state
from cqrs_ddd_core.exceptions import SerializationError
from cqrs_ddd_core.persistence.unit_of_work import require_uow

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from cqrs_ddd_advanced_core.sagas.state import SagaStatus
    from cqrs_ddd_core.adapters.sqlalchemy.plan import FlushPlan
    from cqrs_ddd_core.persistence.ports import UnitOfWork

__all__ = ["SQLAlchemySagaStore"]

_Row = tuple[str, int, int, str]  # saga id, expected version, new version, state JSON

_FIND = Query(
    select(cast(aggregate_state.c.state, Text)).where(
        aggregate_state.c.aggregate_type == bindparam("aggregate_type"),
        aggregate_state.c.aggregate_id == bindparam("aggregate_id"),
    )
)
_ALL = Query(
    select(cast(aggregate_state.c.state, Text)).where(
        aggregate_state.c.aggregate_type == bindparam("aggregate_type")
    )
)


class SQLAlchemySagaStore:
    """Saga states on SQLite or PostgreSQL; saves commit with a ``SQLAlchemyUnitOfWork``.

    Args:
        engine: The database (the unit of work must use the same one).
    """

    collection = "aggregate_state"

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @property
    def engine(self) -> AsyncEngine:
        """The database the saga rows live in."""
        return self._engine

    async def find(self, saga_id: str) -> SagaState | None:
        """The saga stored under ``saga_id``, or ``None`` (see ``SagaStore.find``)."""
        rows = await fetch(self._engine, _FIND, aggregate_type=SAGA_ROW_TYPE, aggregate_id=saga_id)
        return None if not rows else SagaState.model_validate_json(rows[0][0])

    def save(
        self, state: SagaState, *, expected_version: int, uow: UnitOfWork | None = None
    ) -> None:
        """Stage ``state`` in ``uow`` with an optimistic version check (see ``SagaStore.save``)."""
        uow = require_uow(uow, "SQLAlchemySagaStore.save")
        try:
            text = state.model_dump_json()
        except (PydanticSerializationError, TypeError, ValueError) as exc:
            raise SerializationError(state.saga_type, str(exc)) from exc
        uow.stage(self, (state.saga_id, expected_version, state.version, text))

    def add_to_plan(self, plan: FlushPlan, records: list[_Row]) -> None:
        """Add the staged saves to the commit's plan (as versioned state rows)."""
        for saga_id, expected, version, text in records:
            plan.add_state(SAGA_ROW_TYPE, saga_id, expected, version, text)

    async def _states(self) -> list[SagaState]:
        rows = await fetch(self._engine, _ALL, aggregate_type=SAGA_ROW_TYPE)
        return [SagaState.model_validate_json(row[0]) for row in rows]

    async def list_sagas(
        self,
        *,
        saga_type: str | None = None,
        statuses: Collection[SagaStatus] | None = None,
        limit: int = 1000,
    ) -> list[SagaState]:
        """Stored sagas, filtered by type and status (see ``SagaStore.list_sagas``)."""
        return select_sagas(
            await self._states(), saga_type=saga_type, statuses=statuses, limit=limit
        )

    async def due(self, now: datetime, *, limit: int = 100) -> list[SagaState]:
        """Running sagas whose stored deadline is at or before ``now`` (see ``SagaStore.due``)."""
        return due_sagas(await self._states(), now, limit=limit)

    def __repr__(self) -> str:
        url = self._engine.url.render_as_string(hide_password=True)
        return f"SQLAlchemySagaStore({url!r})"
