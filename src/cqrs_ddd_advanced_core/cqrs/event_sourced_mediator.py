"""A :class:`~cqrs_ddd_core.cqrs.Mediator` whose default pipeline persists events.

Nothing is overridden around dispatch: the default command pipeline is the
core's, with the persistence steps inserted right after ``unit_of_work``::

    ... -> unit_of_work -> event_persistence -> outbox -> <inner> -> handler

(``outbox`` only with an ``outbox_store``; ``<inner>``: ``inner_middlewares``.)
``insert_before`` / ``insert_after`` place more steps among these defaults by
name (``insert_after={"logging": audit}``). A team that lists its own
``middlewares`` lists the persistence steps itself; the mediator then checks
that ``event_persistence`` is among them (given an orchestrator) and that
``outbox`` is (given an ``outbox_store``).

Arguments follow the seed: ``registry``, ``uow_factory`` and
``event_persistence_orchestrator`` by keyword (or positionally, in that order,
like the core :class:`~cqrs_ddd_core.cqrs.Mediator`'s ``registry, uow_factory``),
everything else by keyword only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from cqrs_ddd_advanced_core.domain.exceptions import EventSourcingConfigurationError
from cqrs_ddd_advanced_core.middleware.event_persistence import EventPersistenceMiddleware
from cqrs_ddd_advanced_core.middleware.outbox import OutboxMiddleware
from cqrs_ddd_core.cqrs.mediator import Mediator
from cqrs_ddd_core.exceptions import PipelineConfigurationError
from cqrs_ddd_core.pipeline.pipeline import middleware_name

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

    from cqrs_ddd_advanced_core.event_sourcing.persistence_orchestrator import (
        EventSourcedPersistenceOrchestrator,
    )
    from cqrs_ddd_core.cqrs.registry import HandlerRegistry
    from cqrs_ddd_core.persistence.ports import EventStore, OutboxStore, UnitOfWorkFactory
    from cqrs_ddd_core.pipeline.pipeline import Middleware

__all__ = ["EventSourcedMediator"]

_UNIT_OF_WORK = "unit_of_work"


class EventSourcedMediator(Mediator):
    """A mediator that persists the events of event-sourced aggregates.

    Args:
        registry: Where handlers are looked up.
        uow_factory: Makes the unit of work of each top-level command.
        event_persistence_orchestrator: Routes events to event stores. Without
            it no event is persisted (and ``configure_*`` raise).
        outbox_store: When given, the default pipeline also writes one outbox
            message per event, in the same transaction.
        inner_middlewares: Listed after the persistence steps in the default
            pipeline, nearest the handler (e.g. an ``AuditMiddleware``).
        middlewares: The whole command pipeline instead of the default.
        query_middlewares: The query pipeline (``None``: the core default).
        insert_before: Step name -> middleware(s) listed right before that step
            of the default command pipeline (e.g. ``{"event_persistence": x}``).
        insert_after: Step name -> middleware(s) listed right after it.
        tracer_provider: For the default pipelines' tracing (default: global).
        meter_provider: For the default pipelines' metrics (default: global).

    Raises:
        EventSourcingConfigurationError: an orchestrator is given but the
            pipeline has nowhere to persist (no ``unit_of_work`` in the
            default pipeline, or no ``event_persistence`` in ``middlewares``).
        PipelineConfigurationError: an ``outbox_store`` is given with
            ``middlewares`` that list no ``outbox`` step (no outbox message
            would ever be written).
        PipelineConfigurationError: ``insert_*`` names a step the default
            pipeline lacks, or the resulting order breaks a placement rule.
    """

    def __init__(
        self,
        registry: HandlerRegistry,
        uow_factory: UnitOfWorkFactory | None = None,
        event_persistence_orchestrator: EventSourcedPersistenceOrchestrator | None = None,
        *,
        outbox_store: OutboxStore | None = None,
        inner_middlewares: Sequence[Middleware] = (),
        middlewares: Sequence[Middleware] | None = None,
        query_middlewares: Sequence[Middleware] | None = None,
        insert_before: Mapping[str, Middleware | Sequence[Middleware]] | None = None,
        insert_after: Mapping[str, Middleware | Sequence[Middleware]] | None = None,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        # Set before super().__init__: the pipeline is built there, from these.
        self.event_persistence_orchestrator = event_persistence_orchestrator
        self.outbox_store = outbox_store
        self._inner_middlewares = tuple(inner_middlewares)
        names = [middleware_name(m) for m in middlewares] if middlewares is not None else []
        if (
            middlewares is not None
            and outbox_store is not None
            and (OutboxMiddleware.name not in names)
        ):
            raise PipelineConfigurationError(
                "EventSourcedMediator was given an outbox_store and a middleware list "
                f"without {OutboxMiddleware.name!r}, so no outbox message would be "
                f"written; listed: {' -> '.join(names) or '(none)'}",
                order=names,
                offender=OutboxMiddleware.name,
            )
        if (
            middlewares is not None
            and event_persistence_orchestrator is not None
            and (EventPersistenceMiddleware.name not in names)
        ):
            raise EventSourcingConfigurationError(
                "EventSourcedMediator was given an orchestrator and a middleware list "
                f"without {EventPersistenceMiddleware.name!r}, so no event would be "
                f"persisted; listed: {' -> '.join(names) or '(none)'}"
            )
        super().__init__(
            registry,
            uow_factory,
            middlewares=middlewares,
            query_middlewares=query_middlewares,
            insert_before=insert_before,
            insert_after=insert_after,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
        )

    def _default_command_middlewares(self) -> list[Middleware]:
        middlewares = super()._default_command_middlewares()
        steps: list[Middleware] = []
        if self.event_persistence_orchestrator is not None:
            steps.append(
                EventPersistenceMiddleware(orchestrator=self.event_persistence_orchestrator)
            )
        if self.outbox_store is not None:
            steps.append(OutboxMiddleware(outbox_store=self.outbox_store))
        steps.extend(self._inner_middlewares)
        if not steps:
            return middlewares
        for index, middleware in enumerate(middlewares):
            if middleware_name(middleware) == _UNIT_OF_WORK:
                middlewares[index + 1 : index + 1] = steps
                return middlewares
        raise EventSourcingConfigurationError(
            "EventSourcedMediator's default pipeline has no unit_of_work step to persist in: "
            "pass a uow_factory (or list the middlewares yourself)"
        )

    def configure_event_sourced_type(
        self, aggregate_type: type | str, event_store: EventStore | None = None
    ) -> None:
        """Register ``aggregate_type`` as event-sourced with the orchestrator.

        Raises:
            EventSourcingConfigurationError: the mediator has no orchestrator.
        """
        self._require_orchestrator().register_event_sourced_type(aggregate_type, event_store)

    def configure_non_event_sourced_type(self, aggregate_type: type | str) -> None:
        """Register ``aggregate_type`` as non-event-sourced with the orchestrator.

        Raises:
            EventSourcingConfigurationError: the mediator has no orchestrator.
        """
        self._require_orchestrator().register_non_event_sourced_type(aggregate_type)

    def _require_orchestrator(self) -> EventSourcedPersistenceOrchestrator:
        if self.event_persistence_orchestrator is None:
            raise EventSourcingConfigurationError(
                "Cannot configure event-sourced types: this EventSourcedMediator has no "
                "event_persistence_orchestrator"
            )
        return self.event_persistence_orchestrator
