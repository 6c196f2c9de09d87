"""The in-memory saga store: staged saves, checked and applied at commit."""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime
from typing import TYPE_CHECKING

from pydantic_core import PydanticSerializationError

from cqrs_ddd_advanced_core.sagas.state import SAGA_ROW_TYPE, SagaState, due_sagas, select_sagas
from cqrs_ddd_core.exceptions import ConcurrencyError, SerializationError
from cqrs_ddd_core.persistence.records import stream_name
from cqrs_ddd_core.persistence.unit_of_work import require_uow

if TYPE_CHECKING:
    from cqrs_ddd_advanced_core.sagas.state import SagaStatus
    from cqrs_ddd_core.persistence.ports import UnitOfWork

__all__ = ["InMemorySagaStore"]
_Row = tuple[str, int, int, str]  # saga id, expected version, new version, state JSON


class InMemorySagaStore:
    """Saga states as JSON with their version; saves commit with an ``InMemoryUnitOfWork``."""

    collection = "sagas"
    operation = "UPSERT"

    def __init__(self) -> None:
        self._rows: dict[str, tuple[int, str]] = {}

    async def find(self, saga_id: str) -> SagaState | None:
        """The saga stored under ``saga_id``, or ``None`` (see ``SagaStore.find``)."""
        row = self._rows.get(saga_id)
        return None if row is None else SagaState.model_validate_json(row[1])

    def save(
        self, state: SagaState, *, expected_version: int, uow: UnitOfWork | None = None
    ) -> None:
        """Stage ``state`` in ``uow`` with an optimistic version check (see ``SagaStore.save``)."""
        uow = require_uow(uow, "InMemorySagaStore.save")
        try:
            text = state.model_dump_json()
        except (PydanticSerializationError, TypeError, ValueError) as exc:
            raise SerializationError(state.saga_type, str(exc)) from exc
        uow.stage(self, (state.saga_id, expected_version, state.version, text))

    def prepare(self, records: list[_Row]) -> Callable[[], None]:
        """Check the staged saves against the committed versions; return the applier."""
        heads: dict[str, int] = {}
        for saga_id, expected, version, _ in records:
            current = heads.get(saga_id)
            if current is None:
                row = self._rows.get(saga_id)
                current = 0 if row is None else row[0]
            if current != expected:
                raise ConcurrencyError(stream_name(SAGA_ROW_TYPE, saga_id), expected, current)
            heads[saga_id] = version

        def apply() -> None:
            for saga_id, _, version, text in records:
                self._rows[saga_id] = (version, text)

        return apply

    def _states(self) -> list[SagaState]:
        return [SagaState.model_validate_json(text) for _, text in self._rows.values()]

    async def list_sagas(
        self,
        *,
        saga_type: str | None = None,
        statuses: Collection[SagaStatus] | None = None,
        limit: int = 1000,
    ) -> list[SagaState]:
        """Stored sagas, filtered by type and status (see ``SagaStore.list_sagas``)."""
        return select_sagas(self._states(), saga_type=saga_type, statuses=statuses, limit=limit)

    async def due(self, now: datetime, *, limit: int = 100) -> list[SagaState]:
        """Running sagas whose stored deadline is at or before ``now`` (see ``SagaStore.due``)."""
        return due_sagas(self._states(), now, limit=limit)

    def __len__(self) -> int:
        return len(self._rows)

    def __repr__(self) -> str:
        return f"InMemorySagaStore({len(self._rows)} sagas)"
