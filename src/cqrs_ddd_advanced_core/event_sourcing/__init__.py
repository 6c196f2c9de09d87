"""Event-sourced persistence: the orchestrator, aggregates rebuilt from streams."""

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

__all__ = [
    "AppendPlan",
    "EventSourcedAggregate",
    "EventSourcedPersistenceOrchestrator",
    "EventSourcedRepository",
    "Upcaster",
    "apply_method_name",
]
