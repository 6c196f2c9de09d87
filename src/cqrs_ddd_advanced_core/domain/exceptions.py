"""Errors raised by the event-sourcing layer.

They hang under the project's root error, so ``except CqrsDddError`` still
catches everything. The subtree (core errors shown in brackets)::

    CqrsDddError
    ├── [ConfigurationError]
    │   ├── EventSourcingConfigurationError     (orchestrator / mediator wired wrongly)
    │   └── SagaDefinitionError                 (a saga that cannot be correlated,
    │                                            completed or run, found when defined)
    ├── EventSchemaVersionError                 (a stored event's schema version has no
    │                                            upcaster path to the current one)
    ├── ProjectionError                         (a projection's handler failed on an event;
    │                                            its batch rolled back, checkpoint unmoved)
    ├── MessagingError                          (events leaving the process)
    │   └── PublishError                        (the broker did not confirm a message)
    ├── SagaError                               (a saga cannot do what was asked)
    │   └── SagaNotFoundError                   (no saga with that id)
    └── EventHandlerError                       (an event could not be handled: applied
        │                                        to an aggregate, or persisted)
        ├── MissingEventHandlerError            (no ``apply_<Event>`` method, strict mode)
        ├── InvalidEventHandlerError            (an ``apply_<Event>`` that cannot be called
        │                                        with the event, or an unknown stored type)
        └── StrictValidationViolationError      (events break the persistence rules;
            │                                    nothing of the command is persisted)
            ├── EventSourcedAggregateRequiredError  (strict mode: aggregate type not
            │                                        registered)
            └── UnroutableEventError            (an event without aggregate type or id,
                                                     in every mode: never silently dropped)

As in the seed (and the design it comes from), ``StrictValidationViolationError``
is an :class:`EventHandlerError`: ``except EventHandlerError`` catches every
error about handling an event, the persistence rules included.

Every error carries its context as attributes (``aggregate_type``,
``event_type``, ...), so handlers and logs need not parse messages.
"""

from __future__ import annotations

from cqrs_ddd_core.exceptions import ConfigurationError, CqrsDddError

__all__ = [
    "EventHandlerError",
    "EventSchemaVersionError",
    "EventSourcedAggregateRequiredError",
    "EventSourcingConfigurationError",
    "InvalidEventHandlerError",
    "MessagingError",
    "MissingEventHandlerError",
    "ProjectionError",
    "PublishError",
    "SagaDefinitionError",
    "SagaError",
    "SagaNotFoundError",
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
    """An event could not be handled: applied to an aggregate, or persisted.

    Attributes:
        aggregate_type: The aggregate concerned (``None`` for an event that
            names none, see :class:`UnroutableEventError`).
        event_type: The type name of the event.
    """

    def __init__(self, message: str, *, aggregate_type: str | None, event_type: str) -> None:
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


class StrictValidationViolationError(EventHandlerError):
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
        super().__init__(
            f"{event_type} ({stream}) cannot be persisted: {reason}",
            aggregate_type=aggregate_type,
            event_type=event_type,
        )
        self.reason = reason
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


class EventSchemaVersionError(CqrsDddError):
    """A stored event's schema version cannot be brought to the current one.

    Raised on a read path (repository load, ``read_all`` through an upcasting
    store, a projection, the outbox relay) when the upcaster registry has no
    chain of steps from the stored version to the version the code expects,
    or when the stored version is newer than the code knows. The stored row
    is never changed.

    Attributes:
        event_type: The stored type name.
        stored_version: The schema version the row was written with.
        current_version: The version the code expects (``None`` if unknown).
        missing_step: The version for which no ``vN -> vN+1`` step exists
            (``None`` when the stored version is newer than the current one).
        event_id: The stored event's id, when known.
    """

    def __init__(
        self,
        *,
        event_type: str,
        stored_version: int,
        current_version: int | None,
        missing_step: int | None,
        event_id: str | None = None,
    ) -> None:
        if missing_step is None:
            why = f"it is newer than the current version {current_version}"
        else:
            why = (
                f"no upcaster is registered from v{missing_step} to v{missing_step + 1} "
                f"(current version {current_version})"
            )
        where = f" (event {event_id})" if event_id else ""
        super().__init__(
            f"{event_type} stored at schema v{stored_version}{where} cannot be read: {why}"
        )
        self.event_type = event_type
        self.stored_version = stored_version
        self.current_version = current_version
        self.missing_step = missing_step
        self.event_id = event_id


class ProjectionError(CqrsDddError):
    """A projection could not apply an event; its batch rolled back.

    The checkpoint stays before the failing event, so a fixed projection
    resumes there: nothing is skipped and nothing is applied twice.

    Attributes:
        projection: The projection's name.
        position: The global position of the event that failed.
        event_type: Its stored type name.
    """

    def __init__(self, reason: str, *, projection: str, position: int, event_type: str) -> None:
        super().__init__(
            f"projection {projection!r} failed on {event_type} at position {position}: {reason}"
        )
        self.projection = projection
        self.position = position
        self.event_type = event_type


class SagaDefinitionError(ConfigurationError):
    """A saga definition that could never run to an end, found when it is built.

    Examples: no event starts it, an awaited event has no correlation key, no
    steps, two steps with one name, a non-positive timeout.

    Attributes:
        saga_type: The saga's name.
        reason: What is wrong with it.
    """

    def __init__(self, saga_type: str, reason: str) -> None:
        super().__init__(f"Saga {saga_type!r} cannot be defined: {reason}")
        self.saga_type = saga_type
        self.reason = reason


class SagaError(CqrsDddError):
    """A saga could not do what was asked of it.

    Attributes:
        saga_id: The saga concerned.
    """

    def __init__(self, message: str, *, saga_id: str) -> None:
        super().__init__(message)
        self.saga_id = saga_id


class SagaNotFoundError(SagaError):
    """No saga is stored under this id."""

    def __init__(self, saga_id: str) -> None:
        super().__init__(f"No saga {saga_id!r} is stored", saga_id=saga_id)


# -- messaging ------------------------------------------------------------------


class MessagingError(CqrsDddError):
    """Events could not be carried to or from a broker."""


class PublishError(MessagingError):
    """The broker did not confirm a message: unreachable, a nack, or no confirm in time.

    The outbox row stays unpublished; the relay retries it after a backoff.
    """
