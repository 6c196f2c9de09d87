"""The commands a saga manager sends itself: each saga transition is one dispatch.

Dispatched through the application's mediator like any command, a
transition runs in the pipeline's unit of work: the saga's new state and
the step's command (sent from the transition's handler, so it joins that
unit of work) commit together or not at all. They are internal: register
nothing for them; :class:`~cqrs_ddd_advanced_core.sagas.SagaManager` does.
"""

from __future__ import annotations

from datetime import datetime

from cqrs_ddd_core.domain.messages import Command, DomainEvent

__all__ = ["AdvanceSaga", "DeliverSagaEvent", "FireSagaTimeout", "ResumeSaga", "StartSaga"]


class StartSaga(Command[bool]):
    """Create the saga ``event`` starts (nothing if it exists). Result: created."""

    saga_type: str
    event: DomainEvent


class AdvanceSaga(Command[bool]):
    """Run the saga's next step or compensation. Result: more work is ready."""

    saga_id: str


class DeliverSagaEvent(Command[bool]):
    """Hand an awaited event to its saga. Result: the saga changed."""

    saga_id: str
    event: DomainEvent


class FireSagaTimeout(Command[bool]):
    """Fail the awaited step whose deadline was ``deadline_at``. Result: fired."""

    saga_id: str
    deadline_at: datetime


class ResumeSaga(Command[bool]):
    """Put a failed saga back to compensating. Result: the saga changed."""

    saga_id: str
