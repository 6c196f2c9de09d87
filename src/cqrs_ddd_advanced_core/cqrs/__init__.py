"""The event-sourced mediator and its factory."""

from __future__ import annotations

from cqrs_ddd_advanced_core.cqrs.event_sourced_mediator import EventSourcedMediator
from cqrs_ddd_advanced_core.cqrs.factory import EventSourcedMediatorFactory

__all__ = ["EventSourcedMediator", "EventSourcedMediatorFactory"]
