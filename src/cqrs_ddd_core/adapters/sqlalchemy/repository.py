"""A repository for state-stored aggregates, with optimistic locking on a version column."""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic, TypeVar

from pydantic_core import PydanticSerializationError
from sqlalchemy import Text, bindparam, cast, select

from cqrs_ddd_core.adapters.sqlalchemy.reads import Query, fetch
from cqrs_ddd_core.adapters.sqlalchemy.tables import aggregate_state
from cqrs_ddd_core.domain.aggregate import AggregateRoot
from cqrs_ddd_core.exceptions import RecordNotFoundError, SerializationError
from cqrs_ddd_core.persistence.limits import check_json_text, check_stream
from cqrs_ddd_core.persistence.unit_of_work import require_uow

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from cqrs_ddd_core.adapters.sqlalchemy.plan import FlushPlan
    from cqrs_ddd_core.persistence.ports import UnitOfWork

__all__ = ["SQLAlchemyStateRepository"]

TAggregate = TypeVar("TAggregate", bound=AggregateRoot)

_Row = tuple[str, int, int, str]  # id, expected version, new version, state JSON

# As text: pydantic parses JSON text faster than a decoded dict, and exactly as written.
_FIND = Query(
    select(cast(aggregate_state.c.state, Text)).where(
        aggregate_state.c.aggregate_type == bindparam("aggregate_type"),
        aggregate_state.c.aggregate_id == bindparam("aggregate_id"),
    )
)


class SQLAlchemyStateRepository(Generic[TAggregate]):
    """Each aggregate's JSON state and version in the ``aggregate_state`` table.

    :meth:`save` stages the state on the unit of work; at commit the row must
    still be at the version the aggregate was loaded at (or absent, for a
    new aggregate), else the commit raises ``ConcurrencyError`` and nothing
    is written.

    Args:
        aggregate_type: The aggregate class (its ``type_name()`` keys the rows).
        engine: The database (the unit of work must use the same one).
    """

    collection = "aggregate_state"

    def __init__(self, aggregate_type: type[TAggregate], engine: AsyncEngine) -> None:
        self.aggregate_type = aggregate_type
        self._type_name = aggregate_type.type_name()
        self._engine = engine

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def find(self, aggregate_id: str, *, uow: UnitOfWork | None = None) -> TAggregate | None:
        rows = await fetch(
            self._engine, _FIND, aggregate_type=self._type_name, aggregate_id=aggregate_id
        )
        if not rows:
            return None
        aggregate = self.aggregate_type.model_validate_json(rows[0][0])
        aggregate.mark_persisted()  # loaded at this version: the expected one at save
        return aggregate

    async def get(self, aggregate_id: str, *, uow: UnitOfWork | None = None) -> TAggregate:
        found = await self.find(aggregate_id, uow=uow)
        if found is None:
            raise RecordNotFoundError(self._type_name, aggregate_id)
        return found

    def save(self, aggregate: TAggregate, *, uow: UnitOfWork | None = None) -> None:
        """Stage ``aggregate``'s state.

        Raises:
            SerializationError: the state has no JSON form (nothing is staged).
            StorageLimitError: the type, id or state breaks an input rule.
        """
        uow = require_uow(uow, "SQLAlchemyStateRepository.save")
        try:
            state = aggregate.model_dump_json()
        except (PydanticSerializationError, TypeError, ValueError) as exc:
            raise SerializationError(self._type_name, str(exc)) from exc
        check_stream(self._type_name, self._type_name, aggregate.id)
        if not state.isascii():  # (the common case needs no call)
            check_json_text(self._type_name, "state", state)
        uow.stage(self, (aggregate.id, aggregate.original_version, aggregate.version, state))

    def add_to_plan(self, plan: FlushPlan, records: list[_Row]) -> None:
        for aggregate_id, expected, version, state in records:
            plan.add_state(self._type_name, aggregate_id, expected, version, state)

    def __repr__(self) -> str:
        url = self._engine.url.render_as_string(hide_password=True)
        return f"SQLAlchemyStateRepository({self._type_name}, {url!r})"
