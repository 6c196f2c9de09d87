"""Domain-level pieces of the advanced package: its errors."""

from __future__ import annotations

from cqrs_ddd_advanced_core.domain.exceptions import (
    EventHandlerError,
    EventSourcedAggregateRequiredError,
    EventSourcingConfigurationError,
    InvalidEventHandlerError,
    MessagingError,
    MissingEventHandlerError,
    PublishError,
    StrictValidationViolationError,
    UnroutableEventError,
)

__all__ = [
    "EventHandlerError",
    "EventSourcedAggregateRequiredError",
    "EventSourcingConfigurationError",
    "InvalidEventHandlerError",
    "MessagingError",
    "MissingEventHandlerError",
    "PublishError",
    "StrictValidationViolationError",
    "UnroutableEventError",
]
