"""``@non_event_sourced``: mark an aggregate whose events are not stored as a stream.

Such an aggregate keeps its state in a state repository; its events still go
to the outbox (when an :class:`~cqrs_ddd_advanced_core.middleware.OutboxMiddleware`
is listed) and to in-process event handlers, but never to the event store.

The decorator sets the class attribute ``__non_event_sourced__ = True``
(inherited by subclasses) and records the class's aggregate type name in a
process-wide registry, so an orchestrator that meets an event of that type
treats it as non-event-sourced even if nobody registered it. Only the
decorated class's own type name is recorded: events of a subclass carry the
subclass's type name, so decorate or register that subclass too.
"""

from __future__ import annotations

from typing import TypeVar

from cqrs_ddd_advanced_core.domain.exceptions import EventSourcingConfigurationError

__all__ = ["aggregate_type_name", "is_non_event_sourced", "non_event_sourced"]

T = TypeVar("T", bound=type)

_NON_EVENT_SOURCED_NAMES: set[str] = set()


def aggregate_type_name(aggregate: type | str) -> str:
    """The stream type name of an aggregate class (its ``type_name()``), or ``aggregate``
    itself when it is already a name."""
    if isinstance(aggregate, str):
        return aggregate
    type_name = getattr(aggregate, "type_name", None)
    if callable(type_name):
        name = type_name()
        if isinstance(name, str) and name:
            return name
    return aggregate.__name__


def non_event_sourced(cls: T) -> T:
    """Mark ``cls`` as an aggregate whose events skip the event store.

    Example::

        @non_event_sourced
        class UserPreferences(AggregateRoot):
            settings: dict[str, str] = {}

    Raises:
        EventSourcingConfigurationError: ``cls`` is not a class.
    """
    if not isinstance(cls, type):
        raise EventSourcingConfigurationError(
            f"@non_event_sourced decorates aggregate classes, not {cls!r}"
        )
    cls.__non_event_sourced__ = True  # type: ignore[attr-defined]
    _NON_EVENT_SOURCED_NAMES.add(aggregate_type_name(cls))
    return cls


def is_non_event_sourced(aggregate: type | str) -> bool:
    """True for a class marked ``@non_event_sourced`` (or a subclass of one), or the
    type name of a decorated class."""
    if isinstance(aggregate, str):
        return aggregate in _NON_EVENT_SOURCED_NAMES
    return getattr(aggregate, "__non_event_sourced__", False) is True
