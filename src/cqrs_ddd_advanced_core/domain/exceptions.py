"""Errors raised by the event-sourcing layer.

They hang under the project's root error, so ``except CqrsDddError`` still
catches everything. The subtree (core errors shown in brackets)::

    CqrsDddError
    ├── [ConfigurationError]
    │   └── EventSourcingConfigurationError     (orchestrator / mediator wired wrongly)
    ├── EventHandlerError                       (rebuilding an aggregate from its events)
    │   ├── MissingEventHandlerError            (no ``apply_<Event>`` method, strict mode)
    │   └── InvalidEventHandlerError            (an ``apply_<Event>`` that cannot be called
    │                                            with the event, or an unknown stored type)
    ├── StrictValidationViolationError          (events break the persistence rules;
    │   │                                        nothing of the command is persisted)
    │   ├── EventSourcedAggregateRequiredError  (strict mode: aggregate type not registered)
    │   └── UnroutableEventError                (an event without aggregate type or id,
    │                                            in every mode: never silently dropped)
    └── MessagingError                          (events leaving the process)
        └── PublishError                        (the broker did not confirm a message)

Every error carries its context as attributes (``aggregate_type``,
``event_type``, ...), so handlers and logs need not parse messages.
"""

from __future__ import annotations

from cqrs_ddd_core.exceptions import ConfigurationError, CqrsDddError

__all__ = [
    "EventHandlerError",
    "EventSourcedAggregateRequiredError",
    "EventSourcingConfigurationError",
    "InvalidEventHandlerError",
    "MessagingError",
    "MissingEventHandlerError",
    "PublishError",
    "StrictValidationViolationError",
    "UnroutableEventError",
]


class EventSourcingConfigurationError(ConfigurationError):
    """Event sourcing was configured in a way that cannot work.

    Examples: configuring event-sourced types on a mediator that has no
    orchestrator, registering a ``@non_event_sourced`` class as event-sourced,
    an ``EventSourcedMediator`` whose pipeline lists no persistence step.

    Attributes:
        aggregate_type: The aggregate type concerned, when there is one.
    """

    def __init__(self, message: str, *, aggregate_type: str | None = None) -> None:
        super().__init__(message)
        self.aggregate_type = aggregate_type


class EventHandlerError(CqrsDddError):
    """An aggregate could not apply an event while being rebuilt.

    Attributes:
        aggregate_type: The aggregate being rebuilt.
        event_type: The stored type name of the event.
    """

    def __init__(self, message: str, *, aggregate_type: str, event_type: str) -> None:
        super().__init__(message)
        self.aggregate_type = aggregate_type
        self.event_type = event_type


class MissingEventHandlerError(EventHandlerError):
    """The aggregate has no ``apply_<EventName>`` method for an event (strict mode).

    Attributes:
        method_name: The method that was looked for.
    """

    def __init__(self, *, aggregate_type: str, event_type: str, method_name: str) -> None:
        super().__init__(
            f"{aggregate_type} has no {method_name}() to apply {event_type}; "
            f"define it, or set strict_apply = False on {aggregate_type} to skip such events",
            aggregate_type=aggregate_type,
            event_type=event_type,
        )
        self.method_name = method_name


class InvalidEventHandlerError(EventHandlerError):
    """An event handler exists but is unusable, or a stored event cannot be decoded.

    Raised when a class defines an ``apply_<EventName>`` attribute that is not
    a method taking exactly one event, and when a stored event's type has no
    known event class.

    Attributes:
        reason: Why the handler or event was rejected.
    """

    def __init__(self, reason: str, *, aggregate_type: str, event_type: str) -> None:
        super().__init__(
            f"Invalid event handler for {event_type} on {aggregate_type}: {reason}",
            aggregate_type=aggregate_type,
            event_type=event_type,
        )
        self.reason = reason


class StrictValidationViolationError(CqrsDddError):
    """The events of a command break the persistence rules; nothing is persisted.

    Raised inside the unit of work, so the whole command rolls back. Rules
    checked in every mode: each event names its stream (aggregate type and id)
    and carries a version, and one stream's versions are contiguous.

    Attributes:
        event_type: The offending event's type name.
        aggregate_type: Its aggregate type, if it has one.
        aggregate_id: Its aggregate id, if it has one.
        reason: The rule that was broken.
    """

    def __init__(
        self,
        reason: str,
        *,
        event_type: str,
        aggregate_type: str | None = None,
        aggregate_id: str | None = None,
    ) -> None:
        stream = f"{aggregate_type}:{aggregate_id}" if aggregate_type else "no stream"
        super().__init__(f"{event_type} ({stream}) cannot be persisted: {reason}")
        self.reason = reason
        self.event_type = event_type
        self.aggregate_type = aggregate_type
        self.aggregate_id = aggregate_id


class EventSourcedAggregateRequiredError(StrictValidationViolationError):
    """Strict mode met an event of an aggregate type that was never registered.

    Register the type with ``register_event_sourced_type`` (or
    ``register_non_event_sourced_type`` / ``@non_event_sourced``), or use
    lenient mode.
    """

    def __init__(self, *, aggregate_type: str, event_type: str, aggregate_id: str | None) -> None:
        super().__init__(
            f"aggregate type {aggregate_type!r} is not registered as event-sourced or "
            "non-event-sourced (strict mode)",
            event_type=event_type,
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
        )


class UnroutableEventError(StrictValidationViolationError):
    """An event has no aggregate type or id, so no stream can hold it.

    Raised in strict and lenient mode alike: an event is never dropped silently.
    """


# -- messaging ------------------------------------------------------------------


class MessagingError(CqrsDddError):
    """Events could not be carried to or from a broker."""


class PublishError(MessagingError):
    """The broker did not confirm a message: unreachable, a nack, or no confirm in time.

    The outbox row stays unpublished; the relay retries it after a backoff.
    """
