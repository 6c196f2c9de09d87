"""In-memory adapters: first-class, transactional, for tests and small services."""

from __future__ import annotations

from cqrs_ddd_core.adapters.memory.audit import InMemoryAuditStore
from cqrs_ddd_core.adapters.memory.event_store import InMemoryEventStore
from cqrs_ddd_core.adapters.memory.inbox import InMemoryInboxStore
from cqrs_ddd_core.adapters.memory.outbox import InMemoryOutboxStore
from cqrs_ddd_core.adapters.memory.projections import (
    InMemoryProjectionSession,
    InMemoryProjectionStore,
    InMemoryProjectionTransaction,
)
from cqrs_ddd_core.adapters.memory.repository import InMemoryStateRepository
from cqrs_ddd_core.adapters.memory.snapshots import InMemorySnapshotStore
from cqrs_ddd_core.adapters.memory.unit_of_work import InMemoryUnitOfWork, MemoryWriter

__all__ = [
    "InMemoryAuditStore",
    "InMemoryEventStore",
    "InMemoryInboxStore",
    "InMemoryOutboxStore",
    "InMemoryProjectionSession",
    "InMemoryProjectionStore",
    "InMemoryProjectionTransaction",
    "InMemorySnapshotStore",
    "InMemoryStateRepository",
    "InMemoryUnitOfWork",
    "MemoryWriter",
]
