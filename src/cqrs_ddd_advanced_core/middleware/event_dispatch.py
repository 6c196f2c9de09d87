"""Hand a command's events to an event dispatcher once its transaction committed.

The dispatcher (anything with ``async dispatch(event)``) sees only committed
events, in the order they were persisted: a parent command's before those of
the commands its handler sent. If the transaction rolls back it sees nothing.
Delivery is in process and at most once; a failing ``dispatch`` is logged and
the next event still goes out. For reliable delivery to other services use
the outbox.

Each dispatch runs outside the committed dispatch (the hook runs while the
command's pipeline unwinds, so its dispatch context is cleared first) and in
a correlation scope of the event: a command sent by the dispatcher's handlers
opens its own unit of work, with the event's correlation id and the event's
id as causation id, like the core mediator's in-process event handlers.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from cqrs_ddd_core.context import _current, correlation_scope
from cqrs_ddd_core.exceptions import UnitOfWorkError
from cqrs_ddd_core.pipeline.pipeline import CallNext, Placement
from cqrs_ddd_core.telemetry.api import error_type

if TYPE_CHECKING:
    from cqrs_ddd_core.context import DispatchContext
    from cqrs_ddd_core.domain.messages import DomainEvent

__all__ = ["EventDispatchMiddleware", "EventDispatcher"]

_log = structlog.get_logger("cqrs_ddd_advanced_core.event_dispatch")


class EventDispatcher(Protocol):
    """Receives committed events, one at a time."""

    async def dispatch(self, event: DomainEvent) -> None: ...


class EventDispatchMiddleware:
    """Dispatches the response's events after the unit of work commits.

    Args:
        dispatcher: Gets ``await dispatcher.dispatch(event)`` per event.
    """

    name = "event_dispatch"
    placement = Placement.of(inside=("unit_of_work",))

    __slots__ = ("_dispatcher",)

    def __init__(self, *, dispatcher: EventDispatcher) -> None:
        if not callable(getattr(dispatcher, "dispatch", None)):
            raise TypeError(f"dispatcher must have an async dispatch(event), got {dispatcher!r}")
        self._dispatcher = dispatcher

    async def __call__(self, message: Any, context: DispatchContext, call_next: CallNext) -> Any:
        uow = context.uow
        if uow is None:
            raise UnitOfWorkError(
                "event_dispatch found no unit of work: list a unit_of_work middleware before it"
            )
        # Registered before the handler runs, so a parent's events go out first.
        events: list[DomainEvent] = []
        uow.after_commit(functools.partial(self._dispatch_all, events))
        response = await call_next(message, context)
        found = getattr(response, "events", None)
        if found:
            events.extend(found)
        return response

    async def _dispatch_all(self, events: Sequence[DomainEvent]) -> None:
        # The committed dispatch is still current while its unit of work runs
        # this hook; a command sent from here must not join that finished unit
        # of work, so it starts from no dispatch at all.
        token = _current.set(None)
        try:
            for event in events:
                try:
                    with correlation_scope(event.correlation_id or event.event_id, event.event_id):
                        await self._dispatcher.dispatch(event)
                except Exception as exc:
                    _log.error(
                        "event_dispatch_failed",
                        event_type=event.type_name(),
                        event_id=event.event_id,
                        error_type=error_type(exc),
                        exc_info=exc,
                    )
        finally:
            _current.reset(token)

    def __repr__(self) -> str:
        return f"EventDispatchMiddleware(dispatcher={self._dispatcher!r})"
