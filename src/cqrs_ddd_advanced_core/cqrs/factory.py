"""Build a configured :class:`EventSourcedMediator` step by step.

The positional arguments are the seed's, in its order:
``EventSourcedMediatorFactory(event_store, uow_factory, handler_registry,
event_dispatcher=None, ...)``; everything after them is keyword-only and named
as on :class:`EventSourcedMediator` (``outbox_store``, ``inner_middlewares``,
``insert_before``, ``insert_after``).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from cqrs_ddd_advanced_core.cqrs.event_sourced_mediator import EventSourcedMediator
from cqrs_ddd_advanced_core.domain.exceptions import EventSourcingConfigurationError
from cqrs_ddd_advanced_core.event_sourcing.persistence_orchestrator import (
    EventSourcedPersistenceOrchestrator,
)
from cqrs_ddd_advanced_core.middleware.event_dispatch import (
    EventDispatcher,
    EventDispatchMiddleware,
)

if TYPE_CHECKING:
    from cqrs_ddd_core.cqrs.registry import HandlerRegistry
    from cqrs_ddd_core.persistence.ports import EventStore, OutboxStore, UnitOfWorkFactory
    from cqrs_ddd_core.pipeline.pipeline import Middleware

__all__ = ["EventSourcedMediatorFactory"]


class EventSourcedMediatorFactory:
    """Collects event-sourcing configuration, then creates mediators.

    Args:
        event_store: The default event store.
        uow_factory: Makes the unit of work of each top-level command.
        handler_registry: Where handlers are looked up.
        event_dispatcher: When given, ``await event_dispatcher.dispatch(event)``
            runs for each event after its command's transaction committed, in
            persistence order (see :class:`EventDispatchMiddleware`).
        strict: Refuse events of unregistered aggregate types.
        outbox_store: Also write one outbox message per event.
        inner_middlewares: Extra middlewares listed after the persistence
            steps, nearest the handler (e.g. an ``AuditMiddleware``).
        insert_before: Step name -> middleware(s) listed right before that
            step of the default pipeline (as on :class:`EventSourcedMediator`).
        insert_after: Step name -> middleware(s) listed right after it.
        middlewares: The former name of ``inner_middlewares`` (deprecated:
            on the mediator ``middlewares`` means the whole pipeline).

    Raises:
        EventSourcingConfigurationError: both ``middlewares`` and
            ``inner_middlewares`` are given.

    Every mediator a factory creates shares its orchestrator, so types
    registered later apply to all of them.
    """

    def __init__(
        self,
        event_store: EventStore,
        uow_factory: UnitOfWorkFactory,
        handler_registry: HandlerRegistry,
        event_dispatcher: EventDispatcher | None = None,
        *,
        strict: bool = True,
        outbox_store: OutboxStore | None = None,
        inner_middlewares: Sequence[Middleware] = (),
        insert_before: Mapping[str, Middleware | Sequence[Middleware]] | None = None,
        insert_after: Mapping[str, Middleware | Sequence[Middleware]] | None = None,
        middlewares: Sequence[Middleware] | None = None,
    ) -> None:
        if middlewares is not None:
            if inner_middlewares:
                raise EventSourcingConfigurationError(
                    "EventSourcedMediatorFactory: pass inner_middlewares only "
                    "(middlewares is its former name)"
                )
            warnings.warn(
                "EventSourcedMediatorFactory(middlewares=...) is deprecated: "
                "use inner_middlewares=... (the name EventSourcedMediator uses)",
                DeprecationWarning,
                stacklevel=2,
            )
            inner_middlewares = middlewares
        self.orchestrator = EventSourcedPersistenceOrchestrator(
            default_event_store=event_store, strict=strict
        )
        self.uow_factory = uow_factory
        self.handler_registry = handler_registry
        self.event_dispatcher = event_dispatcher
        self.outbox_store = outbox_store
        self.insert_before = dict(insert_before or {})
        self.insert_after = dict(insert_after or {})
        inner = list(inner_middlewares)
        if event_dispatcher is not None:
            # Outermost of the inner steps: it registers its after-commit hook
            # before any nested command can.
            inner.insert(0, EventDispatchMiddleware(dispatcher=event_dispatcher))
        self._inner: tuple[Middleware, ...] = tuple(inner)

    def register_event_sourced_type(
        self, aggregate_type: type | str, event_store: EventStore | None = None
    ) -> EventSourcedMediatorFactory:
        """Persist the events of ``aggregate_type`` (to ``event_store`` or the default)."""
        self.orchestrator.register_event_sourced_type(aggregate_type, event_store)
        return self

    def register_non_event_sourced_type(
        self, aggregate_type: type | str
    ) -> EventSourcedMediatorFactory:
        """Let the events of ``aggregate_type`` skip the event store."""
        self.orchestrator.register_non_event_sourced_type(aggregate_type)
        return self

    def create(self) -> EventSourcedMediator:
        """A mediator whose pipeline persists events (and outbox messages) atomically."""
        return EventSourcedMediator(
            registry=self.handler_registry,
            uow_factory=self.uow_factory,
            event_persistence_orchestrator=self.orchestrator,
            outbox_store=self.outbox_store,
            inner_middlewares=self._inner,
            insert_before=self.insert_before,
            insert_after=self.insert_after,
        )

    def __repr__(self) -> str:
        return f"EventSourcedMediatorFactory({self.orchestrator!r})"
