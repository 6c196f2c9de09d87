"""Persistence ports, records and the shared unit-of-work mechanics."""

from __future__ import annotations

from cqrs_ddd_core.persistence.ports import (
    AfterHook,
    AuditStore,
    EventStore,
    OutboxStore,
    ProjectionSession,
    ProjectionStore,
    SnapshotStore,
    StateRepository,
    UnitOfWork,
    UnitOfWorkFactory,
)
from cqrs_ddd_core.persistence.records import (
    AuditRecord,
    OutboxMessage,
    OutboxStatus,
    Snapshot,
    StepTiming,
    StoredEvent,
    stream_name,
)
from cqrs_ddd_core.persistence.unit_of_work import BaseUnitOfWork, StagedGroup, require_uow

__all__ = [
    "AfterHook",
    "AuditRecord",
    "AuditStore",
    "BaseUnitOfWork",
    "EventStore",
    "OutboxMessage",
    "OutboxStatus",
    "OutboxStore",
    "ProjectionSession",
    "ProjectionStore",
    "Snapshot",
    "SnapshotStore",
    "StagedGroup",
    "StateRepository",
    "StepTiming",
    "StoredEvent",
    "UnitOfWork",
    "UnitOfWorkFactory",
    "require_uow",
    "stream_name",
]
