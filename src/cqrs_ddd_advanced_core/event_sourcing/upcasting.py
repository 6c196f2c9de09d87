"""Versioned event schemas: an upcaster registry and the chain it applies on reads.

Every event type has a schema version (``DomainEvent.schema_version``; a
class declares its current one as the field's default). When a type's shape
changes, the team bumps that default and registers **one step per version**::

    upcasters = UpcasterRegistry()

    @upcasters.step("OrderPlaced", from_version=1)
    def order_placed_v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "currency": "EUR"}

    @upcasters.step("OrderPlaced", from_version=2)
    def order_placed_v2_to_v3(payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "total_cents": payload.pop("total") * 100}

    upcasters.register_event(OrderPlaced)   # its schema_version default says v3

A stored v1 ``OrderPlaced`` is read as v1 -> v2 -> v3, on every read path:
:class:`~cqrs_ddd_advanced_core.event_sourcing.EventSourcedRepository` (pass
the registry as ``upcaster=``), :class:`UpcastingEventStore` (``read_all``,
``load_stream``; projections read through it), the outbox relay (pass
:meth:`UpcasterRegistry.upcast_message` as its ``upcaster=``) and, for code
holding a bare payload, :meth:`UpcasterRegistry.upcast_payload`. Stored rows
are never rewritten: upcasting happens on a copy, each time it is read.

A stored version with no chain of steps to the current version (a missing
step, or a version newer than the code) raises
:class:`~cqrs_ddd_advanced_core.domain.EventSchemaVersionError`.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from cqrs_ddd_advanced_core.domain.exceptions import (
    EventSchemaVersionError,
    EventSourcingConfigurationError,
)
from cqrs_ddd_core.domain.messages import DomainEvent
from cqrs_ddd_core.persistence.reading import DEFAULT_PAGE_SIZE, EventPages

if TYPE_CHECKING:
    from cqrs_ddd_core.persistence.ports import EventStore, UnitOfWork
    from cqrs_ddd_core.persistence.records import OutboxMessage, StoredEvent

__all__ = ["UpcastStep", "UpcasterRegistry", "UpcastingEventStore"]

UpcastStep = Callable[[dict[str, Any]], dict[str, Any]]
"""One schema step: the payload at version N in, the payload at N+1 out.

It receives a private copy of the payload and may change it in place."""


def _type_name(event_type: str | type[DomainEvent]) -> str:
    if isinstance(event_type, str):
        if not event_type:
            raise EventSourcingConfigurationError("an event type name cannot be empty")
        return event_type
    if isinstance(event_type, type) and issubclass(event_type, DomainEvent):
        return event_type.type_name()
    raise EventSourcingConfigurationError(
        f"expected an event type name or a DomainEvent subclass, got {event_type!r}"
    )


class UpcasterRegistry:
    """Upcasting steps by event type and version, applied as a chain.

    The registry is callable as ``registry(stored) -> stored``, so it fits
    wherever a single ``Upcaster`` is taken.
    """

    __slots__ = ("_current", "_steps")

    def __init__(self) -> None:
        self._steps: dict[str, dict[int, UpcastStep]] = {}
        self._current: dict[str, int] = {}

    # -- registration ----------------------------------------------------------

    def register(
        self, event_type: str | type[DomainEvent], from_version: int, step: UpcastStep
    ) -> None:
        """Register the step from ``from_version`` to ``from_version + 1``.

        Raises:
            EventSourcingConfigurationError: ``from_version`` is below 1, the
                step is not callable, a step from that version exists already,
                or it would go past the type's registered current version.
        """
        name = _type_name(event_type)
        if not isinstance(from_version, int) or isinstance(from_version, bool) or from_version < 1:
            raise EventSourcingConfigurationError(
                f"{name}: from_version must be an int >= 1, got {from_version!r}"
            )
        if not callable(step):
            raise EventSourcingConfigurationError(f"{name}: the step {step!r} is not callable")
        steps = self._steps.setdefault(name, {})
        if from_version in steps:
            raise EventSourcingConfigurationError(
                f"{name}: a step from v{from_version} is registered already "
                f"({getattr(steps[from_version], '__qualname__', steps[from_version])!r})"
            )
        current = self._current.get(name)
        if current is not None and from_version >= current:
            raise EventSourcingConfigurationError(
                f"{name}: a step from v{from_version} goes past the current version v{current}"
            )
        steps[from_version] = step

    def step(
        self, event_type: str | type[DomainEvent], *, from_version: int
    ) -> Callable[[UpcastStep], UpcastStep]:
        """Decorator form of :meth:`register`; returns the function unchanged."""

        def decorate(function: UpcastStep) -> UpcastStep:
            self.register(event_type, from_version, function)
            return function

        return decorate

    def register_event(self, event_cls: type[DomainEvent]) -> None:
        """Take ``event_cls``'s ``schema_version`` default as its type's current version.

        Raises:
            EventSourcingConfigurationError: not a ``DomainEvent`` subclass, a
                version below 1, or steps registered past it.
        """
        name = _type_name(event_cls)
        version = event_cls.model_fields["schema_version"].default
        if not isinstance(version, int) or version < 1:
            raise EventSourcingConfigurationError(
                f"{name}: schema_version default must be an int >= 1, got {version!r}"
            )
        beyond = [v for v in self._steps.get(name, {}) if v >= version]
        if beyond:
            raise EventSourcingConfigurationError(
                f"{name}: current version is v{version} but a step from v{max(beyond)} "
                "is registered"
            )
        self._current[name] = version

    def register_events(self, event_classes: Sequence[type[DomainEvent]]) -> None:
        """:meth:`register_event` for each class."""
        for event_cls in event_classes:
            self.register_event(event_cls)

    def current_version(self, event_type: str | type[DomainEvent]) -> int | None:
        """The version reads are brought to: the registered event class's, else
        one past the highest step; ``None`` when the type has neither."""
        name = _type_name(event_type)
        current = self._current.get(name)
        if current is not None:
            return current
        steps = self._steps.get(name)
        return max(steps) + 1 if steps else None

    # -- reading ------------------------------------------------------------------

    def upcast_payload(
        self,
        event_type: str,
        payload: dict[str, Any],
        schema_version: int,
        *,
        event_id: str | None = None,
    ) -> tuple[dict[str, Any], int]:
        """``payload`` (stored at ``schema_version``) brought to the current version.

        The given dict is never changed; when no step applies it is returned
        as it is.

        Returns:
            The payload and the version it now has.

        Raises:
            EventSchemaVersionError: no chain of steps reaches the current version.
        """
        target = self.current_version(event_type)
        if target is None or schema_version == target:
            return payload, schema_version
        if schema_version > target:
            raise EventSchemaVersionError(
                event_type=event_type,
                stored_version=schema_version,
                current_version=target,
                missing_step=None,
                event_id=event_id,
            )
        steps = self._steps.get(event_type, {})
        data = copy.deepcopy(payload)  # the stored row's dict stays as it was read
        for version in range(schema_version, target):
            step = steps.get(version)
            if step is None:
                raise EventSchemaVersionError(
                    event_type=event_type,
                    stored_version=schema_version,
                    current_version=target,
                    missing_step=version,
                    event_id=event_id,
                )
            data = step(data)
        return data, target

    def upcast(self, stored: StoredEvent) -> StoredEvent:
        """``stored`` at its type's current version (the same object when it is).

        Raises:
            EventSchemaVersionError: no chain of steps reaches the current version.
        """
        if stored.event_type not in self._steps and stored.event_type not in self._current:
            return stored
        payload, version = self.upcast_payload(
            stored.event_type, stored.payload, stored.schema_version, event_id=stored.event_id
        )
        if version == stored.schema_version:
            return stored
        return dataclasses.replace(stored, payload=payload, schema_version=version)

    def upcast_message(self, message: OutboxMessage) -> OutboxMessage:
        """An outbox message at its type's current schema version: the relay's upcaster.

        ``OutboxRelay(store, publisher, upcaster=registry.upcast_message)``
        publishes every message at the current version of its type (with the
        new ``schema_version``, which brokers carry as a header). The claimed
        message is the same object when nothing changes, else a copy: the
        stored row keeps the payload it was written with. A message of no
        known ``schema_version`` (a row written before outbox rows recorded
        it) or of a type the registry does not know is returned as it is.

        Raises:
            EventSchemaVersionError: no chain of steps reaches the current
                version. The relay counts it as a failed attempt: the message
                is retried with backoff (a relay of newer code may take it
                meanwhile) and ends as a dead letter carrying the error text;
                the rest of its stream waits behind it, in order.
        """
        name = message.message_type
        version = message.schema_version
        if version is None or (name not in self._steps and name not in self._current):
            return message
        payload, upcast_to = self.upcast_payload(
            name, message.payload, version, event_id=message.message_id
        )
        if upcast_to == version:
            return message
        # payload_json said what the old payload said: the publisher must serialise anew.
        return dataclasses.replace(
            message, payload=payload, payload_json=None, schema_version=upcast_to
        )

    def upcast_all(self, stored: Sequence[StoredEvent]) -> list[StoredEvent]:
        """:meth:`upcast` for each event, in order."""
        return [self.upcast(event) for event in stored]

    __call__ = upcast

    def __repr__(self) -> str:
        chains = {
            name: f"v{min(steps)}->v{self.current_version(name)}"
            for name, steps in sorted(self._steps.items())
        }
        return f"UpcasterRegistry({chains})"


class UpcastingEventStore:
    """An :class:`~cqrs_ddd_core.persistence.ports.EventStore` whose reads are upcast.

    Appends go to the wrapped store unchanged; ``load_stream`` and
    ``read_all`` return events at their current schema versions. The rows
    in the wrapped store are never changed.

    Args:
        store: The event store to wrap.
        upcasters: The registry whose chains are applied.
    """

    __slots__ = ("_store", "_upcasters")

    def __init__(self, store: EventStore, upcasters: UpcasterRegistry) -> None:
        self._store = store
        self._upcasters = upcasters

    @property
    def inner(self) -> EventStore:
        """The wrapped store."""
        return self._store

    @property
    def upcasters(self) -> UpcasterRegistry:
        """The registry applied on reads."""
        return self._upcasters

    async def append(
        self,
        aggregate_type: str,
        aggregate_id: str,
        events: Sequence[DomainEvent],
        *,
        expected_version: int,
        uow: UnitOfWork | None = None,
    ) -> None:
        """Stage ``events`` on the wrapped store (see ``EventStore.append``)."""
        await self._store.append(
            aggregate_type, aggregate_id, events, expected_version=expected_version, uow=uow
        )

    async def load_stream(
        self, aggregate_type: str, aggregate_id: str, *, from_version: int = 1
    ) -> list[StoredEvent]:
        """The stream's events, upcast (see ``EventStore.load_stream``)."""
        stored = await self._store.load_stream(
            aggregate_type, aggregate_id, from_version=from_version
        )
        return self._upcasters.upcast_all(stored)

    def read_all(
        self,
        *,
        after_position: int = 0,
        limit: int | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> EventPages:
        """Every event above ``after_position`` by position, upcast page by
        page (see ``EventStore.read_all``)."""
        return EventPages(
            lambda after, size: self.read_page(after_position=after, limit=size),
            after_position=after_position,
            limit=limit,
            page_size=page_size,
        )

    async def read_page(self, *, after_position: int = 0, limit: int) -> list[StoredEvent]:
        """One page of events by position, upcast (see ``EventStore.read_page``)."""
        stored = await self._store.read_page(after_position=after_position, limit=limit)
        return self._upcasters.upcast_all(stored)

    async def latest_position(self) -> int:
        """The wrapped store's latest position."""
        return await self._store.latest_position()

    def __repr__(self) -> str:
        return f"UpcastingEventStore({self._store!r}, {self._upcasters!r})"
