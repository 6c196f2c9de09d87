"""Persistence middlewares, one module each; list them inside ``unit_of_work``."""

from __future__ import annotations

from cqrs_ddd_advanced_core.middleware.audit import AuditMiddleware
from cqrs_ddd_advanced_core.middleware.event_dispatch import (
    EventDispatcher,
    EventDispatchMiddleware,
)
from cqrs_ddd_advanced_core.middleware.event_persistence import EventPersistenceMiddleware
from cqrs_ddd_advanced_core.middleware.outbox import OutboxMiddleware

__all__ = [
    "AuditMiddleware",
    "EventDispatchMiddleware",
    "EventDispatcher",
    "EventPersistenceMiddleware",
    "OutboxMiddleware",
]
