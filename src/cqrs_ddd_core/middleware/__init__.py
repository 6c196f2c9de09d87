"""Middlewares that need no event sourcing, one module each."""

from __future__ import annotations

from cqrs_ddd_core.middleware.defaults import (
    default_command_middlewares,
    default_query_middlewares,
)
from cqrs_ddd_core.middleware.unit_of_work import UnitOfWorkMiddleware
from cqrs_ddd_core.middleware.validation import ValidationMiddleware, Validator

__all__ = [
    "UnitOfWorkMiddleware",
    "ValidationMiddleware",
    "Validator",
    "default_command_middlewares",
    "default_query_middlewares",
]
