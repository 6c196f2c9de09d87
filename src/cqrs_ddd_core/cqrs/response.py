"""What ``Mediator.send`` returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from cqrs_ddd_core.domain.aggregate import AggregateRoot
    from cqrs_ddd_core.domain.messages import DomainEvent

__all__ = ["CommandResponse"]

TResult = TypeVar("TResult")


@dataclass(slots=True)
class CommandResponse(Generic[TResult]):
    """A command's result and the events it produced.

    Attributes:
        result: What the handler returned.
        events: The domain events the command raised, in the order raised.
        correlation_id: The business flow the command belongs to.
        causation_id: The id of the command that caused ``events``.
    """

    result: TResult
    events: Sequence[DomainEvent] = ()
    correlation_id: str | None = None
    causation_id: str | None = None

    @classmethod
    def from_aggregates(
        cls, result: TResult, *aggregates: AggregateRoot
    ) -> CommandResponse[TResult]:
        """A response carrying the pending events collected from ``aggregates``."""
        events: list[DomainEvent] = []
        for aggregate in aggregates:
            events.extend(aggregate.collect_events())
        return cls(result=result, events=tuple(events))


_new_response = CommandResponse.__new__


def _response(
    result: TResult, correlation_id: str | None, causation_id: str | None
) -> CommandResponse[TResult]:
    """``CommandResponse(result, (), correlation_id, causation_id)`` without the
    class call (the mediator's hot path; a test compares the two)."""
    response: CommandResponse[TResult] = _new_response(CommandResponse)
    response.result = result
    response.events = ()
    response.correlation_id = correlation_id
    response.causation_id = causation_id
    return response
