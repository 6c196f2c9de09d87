"""Loading event-sourced aggregates from their streams.

The repository only reads: new events reach the store through the command's
response and :class:`~cqrs_ddd_advanced_core.middleware.EventPersistenceMiddleware`
(or the orchestrator's ``persist_events``), in the command's unit of work.

Stored events are turned back into event classes by their stored type name
(``event_types`` lists the classes). An ``upcaster`` may rewrite a stored
event first, e.g. to migrate old ``schema_version`` payloads::

    def upcast(stored: StoredEvent) -> StoredEvent:
        if stored.event_type == "OrderPlaced" and stored.schema_version == 1:
            payload = {**stored.payload, "currency": "EUR"}
            return dataclasses.replace(stored, payload=payload, schema_version=2)
        return stored
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Generic, TypeVar

from pydantic import ValidationError

from cqrs_ddd_advanced_core.domain.exceptions import (
    EventSourcingConfigurationError,
    InvalidEventHandlerError,
)
from cqrs_ddd_advanced_core.event_sourcing.aggregate import EventSourcedAggregate
from cqrs_ddd_core.domain.messages import DomainEvent
from cqrs_ddd_core.exceptions import RecordNotFoundError

if TYPE_CHECKING:
    from cqrs_ddd_core.persistence.ports import EventStore
    from cqrs_ddd_core.persistence.records import StoredEvent

__all__ = ["EventSourcedRepository", "Upcaster"]

TAggregate = TypeVar("TAggregate", bound=EventSourcedAggregate)

Upcaster = Callable[["StoredEvent"], "StoredEvent"]
"""Rewrites a stored event before it is decoded (schema migrations)."""


class EventSourcedRepository(Generic[TAggregate]):
    """Rebuilds aggregates of one class from an event store.

    Args:
        event_store: Where the streams are.
        aggregate_cls: The :class:`EventSourcedAggregate` subclass to rebuild.
        event_types: The event classes its streams hold.
        upcaster: Applied to each stored event before decoding.

    Raises:
        EventSourcingConfigurationError: an entry of ``event_types`` is not a
            ``DomainEvent`` subclass, or two share a type name.
    """

    def __init__(
        self,
        event_store: EventStore,
        aggregate_cls: type[TAggregate],
        *,
        event_types: Iterable[type[DomainEvent]],
        upcaster: Upcaster | None = None,
    ) -> None:
        if not (
            isinstance(aggregate_cls, type) and issubclass(aggregate_cls, EventSourcedAggregate)
        ):
            raise EventSourcingConfigurationError(
                f"aggregate_cls must be an EventSourcedAggregate subclass, got {aggregate_cls!r}"
            )
        self._store = event_store
        self._aggregate_cls = aggregate_cls
        self._aggregate_type = aggregate_cls.type_name()
        self._upcaster = upcaster
        self._event_classes: dict[str, type[DomainEvent]] = {}
        for event_cls in event_types:
            if not (isinstance(event_cls, type) and issubclass(event_cls, DomainEvent)):
                raise EventSourcingConfigurationError(
                    f"{event_cls!r} is not a DomainEvent subclass",
                    aggregate_type=self._aggregate_type,
                )
            known = self._event_classes.setdefault(event_cls.type_name(), event_cls)
            if known is not event_cls:
                raise EventSourcingConfigurationError(
                    f"{known.__qualname__} and {event_cls.__qualname__} share the event type "
                    f"name {event_cls.type_name()!r}",
                    aggregate_type=self._aggregate_type,
                )

    @property
    def aggregate_type(self) -> str:
        return self._aggregate_type

    async def find(self, aggregate_id: str) -> TAggregate | None:
        """The aggregate at its current version, or ``None`` if its stream is empty."""
        stream = await self._store.load_stream(self._aggregate_type, aggregate_id)
        if not stream:
            return None
        aggregate = self._aggregate_cls.blank(aggregate_id)
        for stored in stream:
            event = self.decode(stored)
            if event is not None:
                aggregate.apply(event)
            aggregate.version = stored.version
        aggregate.mark_persisted()
        return aggregate

    async def load(self, aggregate_id: str) -> TAggregate:
        """The aggregate at its current version.

        Raises:
            RecordNotFoundError: the stream is empty.
            MissingEventHandlerError: an event has no ``apply_`` method (strict).
            InvalidEventHandlerError: a stored event cannot be decoded.
        """
        aggregate = await self.find(aggregate_id)
        if aggregate is None:
            raise RecordNotFoundError(self._aggregate_type, aggregate_id)
        return aggregate

    def decode(self, stored: StoredEvent) -> DomainEvent | None:
        """The event object of ``stored`` (after upcasting).

        ``None`` for an unknown type when the aggregate is not strict.

        Raises:
            InvalidEventHandlerError: unknown type (strict) or a payload that
                does not fit its class.
        """
        if self._upcaster is not None:
            stored = self._upcaster(stored)
        event_cls = self._event_classes.get(stored.event_type)
        if event_cls is None:
            if not self._aggregate_cls.strict_apply:
                return None
            raise InvalidEventHandlerError(
                "no event class is known for this stored type; list it in event_types",
                aggregate_type=self._aggregate_type,
                event_type=stored.event_type,
            )
        data = dict(stored.payload)
        data.update(
            event_id=stored.event_id,
            occurred_at=stored.occurred_at,
            aggregate_id=stored.aggregate_id,
            aggregate_type=stored.aggregate_type,
            aggregate_version=stored.version,
            schema_version=stored.schema_version,
            correlation_id=stored.correlation_id,
            causation_id=stored.causation_id,
            metadata=stored.metadata,
        )
        try:
            return event_cls.model_validate(data)
        except ValidationError as exc:
            raise InvalidEventHandlerError(
                f"stored payload does not fit {event_cls.__qualname__}: {exc}",
                aggregate_type=self._aggregate_type,
                event_type=stored.event_type,
            ) from exc

    def __repr__(self) -> str:
        return (
            f"EventSourcedRepository({self._aggregate_type}, store={self._store!r}, "
            f"event_types={sorted(self._event_classes)})"
        )
