"""CQRS-DDD core: messages, aggregates, the mediator and its middleware pipeline.

Importing this package pulls in neither SQLAlchemy nor the OpenTelemetry SDK;
adapters live in ``cqrs_ddd_core.adapters.<tech>`` and are imported explicitly.
"""

from __future__ import annotations

from cqrs_ddd_core.context import DispatchContext, correlation_scope, current_context, current_uow
from cqrs_ddd_core.cqrs import (
    CommandHandler,
    CommandResponse,
    EventHandler,
    HandlerRegistry,
    Mediator,
    QueryHandler,
)
from cqrs_ddd_core.domain import AggregateRoot, Command, DomainEvent, Message, Query
from cqrs_ddd_core.exceptions import (
    CommandRefusedError,
    CommitOutcomeUnknownError,
    ConcurrencyError,
    ConfigurationError,
    CqrsDddError,
    DispatchError,
    FieldError,
    HandlerNotFoundError,
    HandlerRegistrationError,
    MessageValidationError,
    PersistenceError,
    PipelineConfigurationError,
    PipelineFrozenError,
    RecordNotFoundError,
    SerializationError,
    StorageLimitError,
    UnitOfWorkError,
)
from cqrs_ddd_core.extras import MissingExtraError
from cqrs_ddd_core.middleware import (
    LoggingMiddleware,
    MetricsMiddleware,
    TracingMiddleware,
    UnitOfWorkMiddleware,
    ValidationMiddleware,
)
from cqrs_ddd_core.pipeline import (
    CallNext,
    Middleware,
    Pipeline,
    Placement,
    insert_middlewares,
    placement,
)
from cqrs_ddd_core.version import __version__

__all__ = [
    "AggregateRoot",
    "CallNext",
    "Command",
    "CommandHandler",
    "CommandRefusedError",
    "CommandResponse",
    "CommitOutcomeUnknownError",
    "ConcurrencyError",
    "ConfigurationError",
    "CqrsDddError",
    "DispatchContext",
    "DispatchError",
    "DomainEvent",
    "EventHandler",
    "FieldError",
    "HandlerNotFoundError",
    "HandlerRegistrationError",
    "HandlerRegistry",
    "LoggingMiddleware",
    "Mediator",
    "Message",
    "MessageValidationError",
    "MetricsMiddleware",
    "Middleware",
    "MissingExtraError",
    "PersistenceError",
    "Pipeline",
    "PipelineConfigurationError",
    "PipelineFrozenError",
    "Placement",
    "Query",
    "QueryHandler",
    "RecordNotFoundError",
    "SerializationError",
    "StorageLimitError",
    "TracingMiddleware",
    "UnitOfWorkError",
    "UnitOfWorkMiddleware",
    "ValidationMiddleware",
    "__version__",
    "correlation_scope",
    "current_context",
    "current_uow",
    "insert_middlewares",
    "placement",
]
