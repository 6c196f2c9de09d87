"""Event-sourced persistence: the orchestrator, aggregates rebuilt from streams,
snapshots and versioned event schemas (upcasting)."""

from __future__ import annotations

from cqrs_ddd_advanced_core.event_sourcing.aggregate import (
    EventSourcedAggregate,
    apply_method_name,
)
from cqrs_ddd_advanced_core.event_sourcing.persistence_orchestrator import (
    AppendPlan,
    EventSourcedPersistenceOrchestrator,
)
from cqrs_ddd_advanced_core.event_sourcing.repository import EventSourcedRepository, Upcaster
from cqrs_ddd_advanced_core.event_sourcing.snapshots import EveryNEvents, SnapshotPolicy
from cqrs_ddd_advanced_core.event_sourcing.upcasting import (
    UpcasterRegistry,
    UpcastingEventStore,
    UpcastStep,
)

__all__ = [
    "AppendPlan",
    "EventSourcedAggregate",
    "EventSourcedPersistenceOrchestrator",
    "EventSourcedRepository",
    "EveryNEvents",
    "SnapshotPolicy",
    "UpcastStep",
    "Upcaster",
    "UpcasterRegistry",
    "UpcastingEventStore",
    "apply_method_name",
]
