"""CQRS-DDD advanced core: event-sourced persistence as pipeline middlewares.

The seed's front door (``EventSourcedMediator``, its factory, the
orchestrator, ``@non_event_sourced`` and the errors) is built on middlewares
a team can also list itself: ``EventPersistenceMiddleware``,
``OutboxMiddleware``, ``AuditMiddleware`` and ``EventDispatchMiddleware``.
Long-lived streams get snapshots (``EveryNEvents``), versioned event schemas
(``UpcasterRegistry``) and projections (``Projection``, ``ProjectionRunner``).
Sagas (:mod:`cqrs_ddd_advanced_core.sagas`) run long processes over the same
mediator, with compensation, stored deadlines and recovery.
"""

from __future__ import annotations

from cqrs_ddd_advanced_core.cqrs import EventSourcedMediator, EventSourcedMediatorFactory
from cqrs_ddd_advanced_core.decorators import is_non_event_sourced, non_event_sourced
from cqrs_ddd_advanced_core.domain import (
    EventHandlerError,
    EventSchemaVersionError,
    EventSourcedAggregateRequiredError,
    EventSourcingConfigurationError,
    InvalidEventHandlerError,
    MissingEventHandlerError,
    ProjectionError,
    SagaDefinitionError,
    SagaError,
    SagaNotFoundError,
    StrictValidationViolationError,
    UnroutableEventError,
)
from cqrs_ddd_advanced_core.event_sourcing import (
    EventSourcedAggregate,
    EventSourcedPersistenceOrchestrator,
    EventSourcedRepository,
    EveryNEvents,
    UpcasterRegistry,
    UpcastingEventStore,
)
from cqrs_ddd_advanced_core.middleware import (
    AuditMiddleware,
    EventDispatcher,
    EventDispatchMiddleware,
    EventPersistenceMiddleware,
    OutboxMiddleware,
)
from cqrs_ddd_advanced_core.outbox import Backoff, OutboxService, OutboxWorker, Publisher
from cqrs_ddd_advanced_core.projections import Projection, ProjectionRunner
from cqrs_ddd_advanced_core.sagas import (
    SagaBuilder,
    SagaDefinition,
    SagaManager,
    SagaState,
    SagaStatus,
    SagaStore,
    SagaWorker,
)

__all__ = [
    "AuditMiddleware",
    "Backoff",
    "EventDispatchMiddleware",
    "EventDispatcher",
    "EventHandlerError",
    "EventPersistenceMiddleware",
    "EventSchemaVersionError",
    "EventSourcedAggregate",
    "EventSourcedAggregateRequiredError",
    "EventSourcedMediator",
    "EventSourcedMediatorFactory",
    "EventSourcedPersistenceOrchestrator",
    "EventSourcedRepository",
    "EventSourcingConfigurationError",
    "EveryNEvents",
    "InvalidEventHandlerError",
    "MissingEventHandlerError",
    "OutboxMiddleware",
    "OutboxService",
    "OutboxWorker",
    "Projection",
    "ProjectionError",
    "ProjectionRunner",
    "Publisher",
    "SagaBuilder",
    "SagaDefinition",
    "SagaDefinitionError",
    "SagaError",
    "SagaManager",
    "SagaNotFoundError",
    "SagaState",
    "SagaStatus",
    "SagaStore",
    "SagaWorker",
    "StrictValidationViolationError",
    "UnroutableEventError",
    "UpcasterRegistry",
    "UpcastingEventStore",
    "is_non_event_sourced",
    "non_event_sourced",
]
