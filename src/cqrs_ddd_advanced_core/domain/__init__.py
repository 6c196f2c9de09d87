"""Domain-level pieces of the advanced package: its errors."""

from __future__ import annotations

from cqrs_ddd_advanced_core.domain.exceptions import (
    EventHandlerError,
    EventSchemaVersionError,
    EventSourcedAggregateRequiredError,
    EventSourcingConfigurationError,
    InvalidEventHandlerError,
    MessagingError,
    MissingEventHandlerError,
    ProjectionError,
    PublishError,
    SagaDefinitionError,
    SagaError,
    SagaNotFoundError,
    StrictValidationViolationError,
    UnroutableEventError,
)

__all__ = [
    "EventHandlerError",
    "EventSchemaVersionError",
    "EventSourcedAggregateRequiredError",
    "EventSourcingConfigurationError",
    "InvalidEventHandlerError",
    "MessagingError",
    "MissingEventHandlerError",
    "ProjectionError",
    "PublishError",
    "SagaDefinitionError",
    "SagaError",
    "SagaNotFoundError",
    "StrictValidationViolationError",
    "UnroutableEventError",
]
