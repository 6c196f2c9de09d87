"""An in-memory audit store."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from cqrs_ddd_core.persistence.records import AuditRecord

if TYPE_CHECKING:
    from cqrs_ddd_core.persistence.ports import UnitOfWork

__all__ = ["InMemoryAuditStore"]


class InMemoryAuditStore:
    """Audit records in a list: staged ones commit with their unit of work."""

    collection = "audit_log"
    operation = "INSERT"

    def __init__(self) -> None:
        self._records: list[AuditRecord] = []

    async def stage(self, record: AuditRecord, uow: UnitOfWork) -> None:
        uow.stage(self, record)

    async def write(self, record: AuditRecord) -> None:
        self._records.append(record)

    def prepare(self, records: list[AuditRecord]) -> Callable[[], None]:
        return lambda: self._records.extend(records)

    async def list_records(self, *, correlation_id: str | None = None) -> list[AuditRecord]:
        return [r for r in self._records if correlation_id in (None, r.correlation_id)]
