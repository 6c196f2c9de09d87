"""The saga store port: where saga states live, written with the unit of work.

Adapters: :class:`cqrs_ddd_advanced_core.adapters.memory.InMemorySagaStore`
and :class:`cqrs_ddd_advanced_core.adapters.sqlalchemy.SQLAlchemySagaStore`
(SQLite and PostgreSQL). Nothing here imports an adapter.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from cqrs_ddd_advanced_core.sagas.state import SagaState, SagaStatus
    from cqrs_ddd_core.persistence.ports import UnitOfWork

__all__ = ["SagaStore"]


@runtime_checkable
class SagaStore(Protocol):
    """Saga states, versioned; saves are staged on a unit of work."""

    async def find(self, saga_id: str) -> SagaState | None:
        """The committed state of one saga, or None."""
        ...

    def save(
        self, state: SagaState, *, expected_version: int, uow: UnitOfWork | None = None
    ) -> None:
        """Stage ``state`` (already at its new version) on the unit of work.

        At commit the stored version must still be ``expected_version`` (0: the
        saga must not exist yet), else the commit raises ``ConcurrencyError``
        and nothing of the unit of work is written.

        Raises:
            UnitOfWorkError: no unit of work given or running.
            SerializationError: the state has no JSON form (nothing is staged).
        """
        ...

    async def list_sagas(
        self,
        *,
        saga_type: str | None = None,
        statuses: Collection[SagaStatus] | None = None,
        limit: int = 1000,
    ) -> list[SagaState]:
        """Committed sagas, oldest first, filtered by type and status."""
        ...

    async def due(self, now: datetime, *, limit: int = 100) -> list[SagaState]:
        """Open sagas waiting on a step whose deadline is at or before ``now``, oldest first."""
        ...
