"""The mediator: sends each message through its pipeline to its handler."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from cqrs_ddd_core.context import DispatchContext, _current, _root_context, correlation_scope
from cqrs_ddd_core.cqrs.registry import HandlerRegistry
from cqrs_ddd_core.cqrs.response import CommandResponse, _new_response, _response
from cqrs_ddd_core.domain.messages import _evolve
from cqrs_ddd_core.exceptions import ConfigurationError, HandlerNotFoundError
from cqrs_ddd_core.pipeline.insert import insert_middlewares
from cqrs_ddd_core.pipeline.pipeline import Middleware, Pipeline
from cqrs_ddd_core.telemetry.api import error_type

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

    from cqrs_ddd_core.domain.aggregate import AggregateRoot
    from cqrs_ddd_core.domain.messages import Command, DomainEvent, Query
    from cqrs_ddd_core.persistence.ports import UnitOfWorkFactory

__all__ = ["Mediator"]

TResult = TypeVar("TResult")

_log = structlog.get_logger("cqrs_ddd_core.mediator")


class Mediator:
    """Dispatches commands and queries through pipelines built once.

    Args:
        registry: Where handlers are looked up.
        uow_factory: Makes a unit of work per top-level command; used by the
            default pipeline's :class:`UnitOfWorkMiddleware`.
        middlewares: The command pipeline, outermost first. ``None`` means
            the default (see :func:`cqrs_ddd_core.middleware.default_command_middlewares`);
            an empty list means none at all.
        query_middlewares: The query pipeline, outermost first (``None``: default).
        insert_before: With the default command pipeline: step name -> the
            middleware(s) to list right before that step (see
            :func:`~cqrs_ddd_core.pipeline.insert_middlewares`).
        insert_after: Likewise, right after the named step; e.g.
            ``insert_after={"logging": audit}`` gives
            ``tracing -> logging -> audit -> metrics -> ...``.
        tracer_provider: For the default pipelines' tracing (default: the
            global provider); lets tests and multi-tenant apps inject their own.
        meter_provider: For the default pipelines' metrics (default: the global one).

    Raises:
        PipelineConfigurationError: the listed order breaks a placement
            constraint, or ``insert_*`` names a step the default pipeline lacks.
        ConfigurationError: ``insert_*`` together with ``middlewares`` (list the
            steps in place instead).

    In-process event handlers run **after** the top-level command's unit of
    work has committed, in the order the events were persisted, so they never
    see state that may still roll back. A failing event handler is logged and
    does not fail the command (it has committed); reliable delivery to other
    services goes through the outbox. Commands sent by event handlers start
    their own unit of work, with the event's correlation id and the event's
    id as causation id.
    """

    def __init__(
        self,
        registry: HandlerRegistry,
        uow_factory: UnitOfWorkFactory | None = None,
        *,
        middlewares: Sequence[Middleware] | None = None,
        query_middlewares: Sequence[Middleware] | None = None,
        insert_before: Mapping[str, Middleware | Sequence[Middleware]] | None = None,
        insert_after: Mapping[str, Middleware | Sequence[Middleware]] | None = None,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self.registry = registry
        self.uow_factory = uow_factory
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        if middlewares is None:
            commands: Sequence[Middleware] = self._default_command_middlewares()
            if insert_before or insert_after:
                commands = insert_middlewares(commands, before=insert_before, after=insert_after)
        elif insert_before or insert_after:
            raise ConfigurationError(
                "insert_before/insert_after place steps among the default middlewares; "
                "with middlewares= list every step in its place instead"
            )
        else:
            commands = middlewares
        queries = (
            self._default_query_middlewares() if query_middlewares is None else query_middlewares
        )
        self.pipeline = Pipeline(commands, self._handle_command, kind="command")
        self.query_pipeline = Pipeline(queries, self._handle_query, kind="query")
        # The pipelines' first steps, called directly (they are frozen): one
        # call less per dispatch than going through ``Pipeline.__call__``.
        self._send_first = self.pipeline._call
        self._query_first = self.query_pipeline._call
        self._commands = registry._commands
        self._queries = registry._queries
        self._event_handlers = registry._events

    # -- defaults (subclasses extend these) -------------------------------

    def _default_command_middlewares(self) -> list[Middleware]:
        from cqrs_ddd_core.middleware.defaults import default_command_middlewares

        return default_command_middlewares(
            uow_factory=self.uow_factory,
            tracer_provider=self._tracer_provider,
            meter_provider=self._meter_provider,
        )

    def _default_query_middlewares(self) -> list[Middleware]:
        from cqrs_ddd_core.middleware.defaults import default_query_middlewares

        return default_query_middlewares(
            tracer_provider=self._tracer_provider, meter_provider=self._meter_provider
        )

    def describe(self) -> str:
        """Both pipelines' resolved order, for logs and docs."""
        return f"commands: {self.pipeline.describe()}\nqueries:  {self.query_pipeline.describe()}"

    # -- dispatch ----------------------------------------------------------

    async def send(
        self, command: Command[TResult], *, metadata: Mapping[str, Any] | None = None
    ) -> CommandResponse[TResult]:
        """Dispatch ``command`` through the command pipeline.

        Sent from inside a handler, the command joins the running unit of work,
        inherits the correlation id and takes the sender's id as causation id.

        Raises:
            HandlerNotFoundError: nothing handles ``type(command)``.
        """
        parent = _current.get()
        if parent is None:
            context = _root_context(command, "command", metadata)
        else:
            context = DispatchContext(command, "command", parent=parent, metadata=metadata)
        token = _current.set(context)
        try:
            response: CommandResponse[TResult] = await self._send_first(command, context)
        finally:
            _current.reset(token)
        if parent is None and context.published and self._event_handlers:
            await self._publish(context)
        return response

    async def query(
        self, query: Query[TResult], *, metadata: Mapping[str, Any] | None = None
    ) -> TResult:
        """Dispatch ``query`` through the query pipeline and return its result.

        Raises:
            HandlerNotFoundError: nothing handles ``type(query)``.
        """
        parent = _current.get()
        if parent is None:
            context = _root_context(query, "query", metadata)
        else:
            context = DispatchContext(query, "query", parent=parent, metadata=metadata)
        token = _current.set(context)
        try:
            result: TResult = await self._query_first(query, context)
        finally:
            _current.reset(token)
        return result

    # -- terminals ---------------------------------------------------------

    async def _handle_command(self, command: Any, context: DispatchContext) -> CommandResponse[Any]:
        handler = self._commands.get(type(command))
        if handler is None:
            raise HandlerNotFoundError(type(command), "command")
        # This command's place among the events to publish: its events go
        # before those of the commands its handler sends (they are inserted
        # here once the handler returns; a command without events takes none).
        published = context.published
        place = len(published)
        context.recorded = None  # a retried dispatch starts afresh
        outcome = await handler(command)
        if isinstance(outcome, CommandResponse):
            response = outcome
            response.correlation_id = context.correlation_id
            response.causation_id = context.message_id
        elif context.recorded is None:
            # The common case (a plain result, no event): built in place.
            context.events = ()
            response = _new_response(CommandResponse)
            response.result = outcome
            response.events = ()
            response.correlation_id = context.correlation_id
            response.causation_id = context.message_id
            return response
        else:
            response = _response(outcome, context.correlation_id, context.message_id)
        if context.recorded is not None:
            response.events = _with_unreturned(response.events, context.recorded)
        if response.events:
            events = response.events = _stamp(response.events, context)
            published.insert(place, list(events))
            context.events = events
        else:
            context.events = ()
        return response

    async def _handle_query(self, query: Any, context: DispatchContext) -> Any:
        handler = self._queries.get(type(query))
        if handler is None:
            raise HandlerNotFoundError(type(query), "query")
        return await handler(query)

    async def _publish(self, context: DispatchContext) -> None:
        for slot in context.published:
            for event in slot:
                # The event's own correlation id (an event may name another flow
                # than its command's), as EventDispatchMiddleware does.
                correlation_id = event.correlation_id or context.correlation_id
                for handler in self.registry.get_event_handlers(type(event)):
                    with correlation_scope(correlation_id, event.event_id):
                        try:
                            await handler(event)
                        except Exception as exc:
                            _log.error(
                                "event_handler_failed",
                                event_type=event.type_name(),
                                event_id=event.event_id,
                                handler=getattr(handler, "__qualname__", repr(handler)),
                                error_type=error_type(exc),
                                exc_info=exc,
                            )


def _with_unreturned(
    returned: Sequence[DomainEvent], recorded: list[tuple[AggregateRoot, DomainEvent]]
) -> Sequence[DomainEvent]:
    """``returned`` plus the events recorded during the dispatch that it lacks.

    A handler that records events on an aggregate but returns a plain value
    (or forgets an aggregate in ``from_aggregates``) would otherwise commit
    state without its events. The added events follow the returned ones, in
    the order recorded, and leave their aggregate's pending list (they are
    persisted now, not by a later ``collect_events``).
    """
    if len(returned) == len(recorded):
        # The common case: the handler returned exactly what it recorded, in
        # order (CommandResponse.from_aggregates); checked by identity.
        for (_, recorded_event), event in zip(recorded, returned, strict=True):
            if recorded_event is not event:
                break
        else:
            return returned
    returned_ids = {event.event_id for event in returned}
    missing = [(agg, event) for agg, event in recorded if event.event_id not in returned_ids]
    if not missing:
        return returned
    by_aggregate: dict[int, tuple[AggregateRoot, list[DomainEvent]]] = {}
    for aggregate, event in missing:
        by_aggregate.setdefault(id(aggregate), (aggregate, []))[1].append(event)
    for aggregate, events in by_aggregate.values():
        aggregate._forget(events)
    return (*returned, *(event for _, event in missing))


def _stamp(events: Sequence[DomainEvent], context: DispatchContext) -> tuple[DomainEvent, ...]:
    """Give each event the command's correlation id and the command as its cause.

    Events recorded during this dispatch carry them already
    (``AggregateRoot.record_event`` stamps them): then nothing is copied.
    """
    for event in events:
        if event.correlation_id is None or event.causation_id is None:
            break
    else:
        return events if isinstance(events, tuple) else tuple(events)
    stamped = []
    for event in events:
        if event.correlation_id is None or event.causation_id is None:
            event = _evolve(
                event,
                {
                    "correlation_id": event.correlation_id or context.correlation_id,
                    "causation_id": event.causation_id or context.message_id,
                },
            )
        stamped.append(event)
    return tuple(stamped)
