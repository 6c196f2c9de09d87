"""Commands, queries, handlers and the mediator."""

from __future__ import annotations

from cqrs_ddd_core.context import DispatchContext, correlation_scope, current_context, current_uow
from cqrs_ddd_core.cqrs.handlers import CommandHandler, EventHandler, QueryHandler
from cqrs_ddd_core.cqrs.mediator import Mediator
from cqrs_ddd_core.cqrs.registry import HandlerFn, HandlerRegistry
from cqrs_ddd_core.cqrs.response import CommandResponse

__all__ = [
    "CommandHandler",
    "CommandResponse",
    "DispatchContext",
    "EventHandler",
    "HandlerFn",
    "HandlerRegistry",
    "Mediator",
    "QueryHandler",
    "correlation_scope",
    "current_context",
    "current_uow",
]
