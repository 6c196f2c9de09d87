"""Write one outbox message per event, in the command's unit of work.

The message carries the event id as its id, the event type, the payload,
the correlation and causation ids, and the trace context of the span current
when the command ran (W3C ``traceparent``/``tracestate`` with OpenTelemetry's
default propagators), so the publish and the consumer join the command's trace.

Events of non-event-sourced aggregates go to the outbox too: the outbox is
about telling others, not about how the aggregate is stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cqrs_ddd_advanced_core._slot import SlotStaging
from cqrs_ddd_advanced_core.outbox.message import current_trace_context, message_from_event
from cqrs_ddd_core.domain.messages import utc_now
from cqrs_ddd_core.exceptions import UnitOfWorkError
from cqrs_ddd_core.pipeline.pipeline import CallNext, Placement

if TYPE_CHECKING:
    from cqrs_ddd_core.context import DispatchContext
    from cqrs_ddd_core.domain.messages import DomainEvent
    from cqrs_ddd_core.persistence.ports import OutboxStore

__all__ = ["OutboxMiddleware"]


class OutboxMiddleware:
    """Stages the response's events as outbox messages in the unit of work.

    Args:
        outbox_store: Where messages are staged.
        predicate: Which events to publish (default: all of them).
    """

    name = "outbox"
    placement = Placement.of(inside=("unit_of_work",))

    __slots__ = ("_predicate", "_store")

    def __init__(
        self,
        *,
        outbox_store: OutboxStore,
        predicate: Callable[[DomainEvent], bool] | None = None,
    ) -> None:
        if not callable(getattr(outbox_store, "enqueue", None)):
            raise TypeError(f"outbox_store must be an OutboxStore, got {outbox_store!r}")
        if predicate is not None and not callable(predicate):
            raise TypeError(f"predicate must be callable, got {predicate!r}")
        self._store = outbox_store
        self._predicate = predicate

    async def __call__(self, message: Any, context: DispatchContext, call_next: CallNext) -> Any:
        uow = context.uow
        if uow is None:
            raise UnitOfWorkError(
                "outbox found no unit of work: list a unit_of_work middleware before it"
            )
        slot = uow.open_slot()
        response = await call_next(message, context)
        events = getattr(response, "events", None)
        if events:
            if self._predicate is not None:
                events = [event for event in events if self._predicate(event)]
            if events:
                trace_context = current_trace_context()
                now = utc_now()
                messages = [
                    message_from_event(event, trace_context=trace_context, created_at=now)
                    for event in events
                ]
                await self._store.enqueue(messages, uow=SlotStaging(uow, slot))
        return response

    def __repr__(self) -> str:
        return f"OutboxMiddleware(outbox_store={self._store!r}, predicate={self._predicate!r})"
