"""An in-memory repository for state-stored aggregates, with optimistic locking."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

from pydantic_core import PydanticSerializationError

from cqrs_ddd_core.domain.aggregate import AggregateRoot
from cqrs_ddd_core.exceptions import ConcurrencyError, RecordNotFoundError, SerializationError
from cqrs_ddd_core.persistence.limits import check_json_text, check_stream
from cqrs_ddd_core.persistence.records import stream_name
from cqrs_ddd_core.persistence.unit_of_work import require_uow

if TYPE_CHECKING:
    from cqrs_ddd_core.persistence.ports import UnitOfWork

__all__ = ["InMemoryStateRepository"]

TAggregate = TypeVar("TAggregate", bound=AggregateRoot)

_Row = tuple[str, int, int, str]  # id, expected version, new version, state JSON


class InMemoryStateRepository(Generic[TAggregate]):
    """Stores each aggregate's JSON state and version; saves are staged."""

    collection = "aggregate_state"
    operation = "UPSERT"

    def __init__(self, aggregate_type: type[TAggregate]) -> None:
        self.aggregate_type = aggregate_type
        self._rows: dict[str, tuple[int, str]] = {}

    async def find(self, aggregate_id: str, *, uow: UnitOfWork | None = None) -> TAggregate | None:
        row = self._rows.get(aggregate_id)
        if row is None:
            return None
        aggregate = self.aggregate_type.model_validate_json(row[1])
        aggregate._original_version = aggregate.version
        return aggregate

    async def get(self, aggregate_id: str, *, uow: UnitOfWork | None = None) -> TAggregate:
        found = await self.find(aggregate_id, uow=uow)
        if found is None:
            raise RecordNotFoundError(self.aggregate_type.type_name(), aggregate_id)
        return found

    def save(self, aggregate: TAggregate, *, uow: UnitOfWork | None = None) -> None:
        uow = require_uow(uow, "InMemoryStateRepository.save")
        type_name = self.aggregate_type.type_name()
        try:
            state = aggregate.model_dump_json()
        except (PydanticSerializationError, TypeError, ValueError) as exc:
            raise SerializationError(type_name, str(exc)) from exc
        check_stream(type_name, type_name, aggregate.id)  # the SQL adapters' rules too
        check_json_text(type_name, "state", state)
        uow.stage(self, (aggregate.id, aggregate.original_version, aggregate.version, state))

    def prepare(self, records: list[_Row]) -> Callable[[], None]:
        heads: dict[str, int] = {}
        for aggregate_id, expected, new_version, _ in records:
            current = heads.get(aggregate_id)
            if current is None:
                row = self._rows.get(aggregate_id)
                current = 0 if row is None else row[0]
            if current != expected:
                raise ConcurrencyError(
                    stream_name(self.aggregate_type.type_name(), aggregate_id), expected, current
                )
            heads[aggregate_id] = new_version

        def apply() -> None:
            for aggregate_id, _, new_version, state in records:
                self._rows[aggregate_id] = (new_version, state)

        return apply
