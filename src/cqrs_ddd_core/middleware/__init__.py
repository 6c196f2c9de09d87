"""Middlewares that need no event sourcing, one module each."""

from __future__ import annotations

from cqrs_ddd_core.middleware.defaults import (
    default_command_middlewares,
    default_query_middlewares,
)
from cqrs_ddd_core.middleware.logging import DEFAULT_EXPECTED_ERRORS, LoggingMiddleware
from cqrs_ddd_core.middleware.metrics import MetricsMiddleware
from cqrs_ddd_core.middleware.retry import RetryMiddleware
from cqrs_ddd_core.middleware.tracing import TracingMiddleware
from cqrs_ddd_core.middleware.unit_of_work import UnitOfWorkMiddleware
from cqrs_ddd_core.middleware.validation import ValidationMiddleware, Validator

__all__ = [
    "DEFAULT_EXPECTED_ERRORS",
    "LoggingMiddleware",
    "MetricsMiddleware",
    "RetryMiddleware",
    "TracingMiddleware",
    "UnitOfWorkMiddleware",
    "ValidationMiddleware",
    "Validator",
    "default_command_middlewares",
    "default_query_middlewares",
]
