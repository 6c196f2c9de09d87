"""Persist a command's events in its unit of work.

Listed inside ``unit_of_work``, this middleware reserves a place in the write
order before the handler runs and, once the handler returned, stages the
response's events there through the orchestrator. The events commit with the
aggregate state or not at all, and a parent command's events precede those
of the commands its handler sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cqrs_ddd_core.exceptions import UnitOfWorkError
from cqrs_ddd_core.pipeline.pipeline import CallNext, Placement

if TYPE_CHECKING:
    from cqrs_ddd_advanced_core.event_sourcing.persistence_orchestrator import (
        EventSourcedPersistenceOrchestrator,
    )
    from cqrs_ddd_core.context import DispatchContext

__all__ = ["EventPersistenceMiddleware"]


class EventPersistenceMiddleware:
    """Appends the response's events to their event stores, atomically with the command.

    Args:
        orchestrator: Decides which store each event's stream goes to and
            checks the versions (see :class:`EventSourcedPersistenceOrchestrator`).

    Raises:
        UnitOfWorkError: no unit of work is open (list ``unit_of_work`` first).
        StrictValidationViolationError: the events break the persistence
            rules; the unit of work rolls back.
        ConcurrencyError: at commit, a stream moved past the expected version.
    """

    name = "event_persistence"
    placement = Placement.of(inside=("unit_of_work",))

    __slots__ = ("_orchestrator",)

    def __init__(self, *, orchestrator: EventSourcedPersistenceOrchestrator) -> None:
        if not callable(getattr(orchestrator, "persist", None)):
            raise TypeError(
                f"orchestrator must be an EventSourcedPersistenceOrchestrator, got {orchestrator!r}"
            )
        self._orchestrator = orchestrator

    @property
    def orchestrator(self) -> EventSourcedPersistenceOrchestrator:
        return self._orchestrator

    async def __call__(self, message: Any, context: DispatchContext, call_next: CallNext) -> Any:
        uow = context.uow
        if uow is None:
            raise UnitOfWorkError(
                "event_persistence found no unit of work: list a unit_of_work middleware before it"
            )
        slot = uow.open_slot()  # before the handler: a nested command's slot comes later
        response = await call_next(message, context)
        events = getattr(response, "events", None)
        if events:
            await self._orchestrator.persist(events, uow=uow, slot=slot)
        return response

    def __repr__(self) -> str:
        return f"EventPersistenceMiddleware(orchestrator={self._orchestrator!r})"
