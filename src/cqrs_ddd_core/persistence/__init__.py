"""Persistence ports, records and the shared unit-of-work mechanics."""

from __future__ import annotations

from cqrs_ddd_core.persistence.ports import (
    AfterHook,
    AuditStore,
    EventStore,
    InboxStore,
    InboxTransaction,
    OutboxStore,
    ProjectionSession,
    ProjectionStore,
    SnapshotStore,
    StateRepository,
    UnitOfWork,
    UnitOfWorkFactory,
)
from cqrs_ddd_core.persistence.reading import DEFAULT_PAGE_SIZE, EventPages, ReadPage
from cqrs_ddd_core.persistence.records import (
    AuditRecord,
    DatabaseIdentity,
    OutboxMessage,
    OutboxStatus,
    Snapshot,
    StepTiming,
    StoredEvent,
    stream_name,
)
from cqrs_ddd_core.persistence.steps import written_by_aggregate_type
from cqrs_ddd_core.persistence.unit_of_work import BaseUnitOfWork, StagedGroup, require_uow

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "AfterHook",
    "AuditRecord",
    "AuditStore",
    "BaseUnitOfWork",
    "DatabaseIdentity",
    "EventPages",
    "EventStore",
    "InboxStore",
    "InboxTransaction",
    "OutboxMessage",
    "OutboxStatus",
    "OutboxStore",
    "ProjectionSession",
    "ProjectionStore",
    "ReadPage",
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
    "written_by_aggregate_type",
]
