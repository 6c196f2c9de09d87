"""Persistence ports, records and the shared unit-of-work mechanics."""

from __future__ import annotations

from cqrs_ddd_core.persistence.ports import (
    AfterHook,
    AuditStore,
    EventStore,
    InboxStore,
    InboxTransaction,
    OutboxStore,
    StateRepository,
    UnitOfWork,
    UnitOfWorkFactory,
)
from cqrs_ddd_core.persistence.records import (
    AuditRecord,
    OutboxMessage,
    OutboxStatus,
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
    "InboxStore",
    "InboxTransaction",
    "OutboxMessage",
    "OutboxStatus",
    "OutboxStore",
    "StagedGroup",
    "StateRepository",
    "StepTiming",
    "StoredEvent",
    "UnitOfWork",
    "UnitOfWorkFactory",
    "require_uow",
    "stream_name",
]
