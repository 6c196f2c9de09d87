"""Event-sourced aggregates: state is the fold of the aggregate's events.

For every event class the aggregate handles, define a method named
``apply_`` + the event class's ``__name__`` taking the event::

    class Order(EventSourcedAggregate):
        status: str = "new"
        total: int = 0

        def place(self, total: int) -> None:
            self.raise_event(OrderPlaced(total=total))

        def apply_OrderPlaced(self, event: OrderPlaced) -> None:
            self.status = "placed"
            self.total = event.total

Behaviour methods change state only through :meth:`EventSourcedAggregate.raise_event`,
which records the event (stamping id, type and next version) and applies it,
so a live aggregate and one rebuilt from its stream end in the same state.

An event without an ``apply_`` method raises :class:`MissingEventHandlerError`
when ``strict_apply`` is true (the default); set ``strict_apply = False`` on
the class to skip such events (the version still advances). An
``apply_<Name>`` that cannot take one event raises
:class:`InvalidEventHandlerError` when the class is defined.

Rebuilt aggregates are made with ``model_construct`` (no validation): fields
set by the first event's handler need no default.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Self, TypeVar, cast

from cqrs_ddd_advanced_core.domain.exceptions import (
    InvalidEventHandlerError,
    MissingEventHandlerError,
)
from cqrs_ddd_core.domain.aggregate import AggregateRoot
from cqrs_ddd_core.domain.messages import DomainEvent

__all__ = ["EventSourcedAggregate", "apply_method_name"]

TEvent = TypeVar("TEvent", bound=DomainEvent)

_PREFIX = "apply_"


def apply_method_name(event_class: type[DomainEvent]) -> str:
    """The handler method name for ``event_class``: ``apply_<ClassName>``."""
    return _PREFIX + event_class.__name__


@functools.cache
def _handler(aggregate_class: type, event_class: type) -> Callable[[Any, Any], None] | None:
    found = getattr(aggregate_class, _PREFIX + event_class.__name__, None)
    return found if callable(found) else None


def _check_handler(aggregate_class: type, name: str, value: object) -> None:
    event_name = name[len(_PREFIX) :]
    function = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
    if not callable(function) or isinstance(value, (classmethod, staticmethod)):
        raise InvalidEventHandlerError(
            f"{name} must be an instance method taking the event",
            aggregate_type=aggregate_class.__name__,
            event_type=event_name,
        )
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # builtins without a signature: trust them
        return
    try:
        signature.bind(None, None)
    except TypeError:
        raise InvalidEventHandlerError(
            f"{name}{signature} must take exactly one argument besides self (the event)",
            aggregate_type=aggregate_class.__name__,
            event_type=event_name,
        ) from None


class EventSourcedAggregate(AggregateRoot):
    """An aggregate rebuilt from its event stream (see the module docstring).

    Attributes:
        strict_apply: Raise :class:`MissingEventHandlerError` for an event
            without an ``apply_<EventName>`` method (``True``), or skip it.
        snapshot_schema_version: The shape of this class's snapshots; bump it
            when the fields change, so older snapshots are ignored (the
            stream is replayed in full) instead of loaded in a stale shape.
    """

    strict_apply: ClassVar[bool] = True
    snapshot_schema_version: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, value in vars(cls).items():
            if name.startswith(_PREFIX):
                _check_handler(cls, name, value)

    def raise_event(self, event: TEvent) -> TEvent:
        """Record ``event`` (stamped with this aggregate's id, type and next
        version) and apply it. Returns the stamped event."""
        stamped = self.record_event(event)
        self.apply(stamped)
        return stamped

    def apply(self, event: DomainEvent) -> None:
        """Run ``apply_<EventName>(event)``; the version is not changed.

        Raises:
            MissingEventHandlerError: no handler and ``strict_apply`` is true.
        """
        handler = _handler(type(self), type(event))
        if handler is not None:
            handler(self, event)
        elif self.strict_apply:
            raise MissingEventHandlerError(
                aggregate_type=self.type_name(),
                event_type=event.type_name(),
                method_name=apply_method_name(type(event)),
            )

    @classmethod
    def blank(cls, aggregate_id: str) -> Self:
        """An aggregate at version 0, before its first event (not validated)."""
        return cast(Self, cls.model_construct(id=aggregate_id, version=0))

    @classmethod
    def from_events(cls, aggregate_id: str, events: Iterable[DomainEvent]) -> Self:
        """The aggregate after applying ``events`` (its stream, oldest first).

        Its version is that of the last event, and it is the baseline
        (``original_version``) for the events it records next.
        """
        aggregate = cls.blank(aggregate_id)
        for event in events:
            aggregate.apply(event)
            aggregate.version = (
                event.aggregate_version
                if event.aggregate_version is not None
                else aggregate.version + 1
            )
        aggregate.mark_persisted()
        return aggregate
