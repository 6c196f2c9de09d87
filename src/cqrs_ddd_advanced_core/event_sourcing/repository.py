"""Loading event-sourced aggregates from their streams.

The repository only reads: new events reach the store through the command's
response and :class:`~cqrs_ddd_advanced_core.middleware.EventPersistenceMiddleware`
(or the orchestrator's ``persist_events``), in the command's unit of work.

Stored events are turned back into event classes by their stored type name
(``event_types`` lists the classes). An ``upcaster`` rewrites a stored event
first, to migrate old ``schema_version`` payloads: usually an
:class:`~cqrs_ddd_advanced_core.event_sourcing.UpcasterRegistry` (one step
per version, applied as a chain; see :mod:`.upcasting`), or any function
``upcast(stored) -> stored``.

With a ``snapshot_store``, a load reads the stream's latest snapshot and the
events after it; with a ``snapshot_policy`` too, an aggregate loaded (or
:meth:`~EventSourcedRepository.track` ed) inside a unit of work is
snapshotted after that unit of work commits, when the policy says so (see
:mod:`cqrs_ddd_advanced_core.event_sourcing.snapshots` for why after commit).
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
from cqrs_ddd_advanced_core.event_sourcing.snapshots import (
    SnapshotPolicy,
    restore_snapshot,
    take_snapshot,
)
from cqrs_ddd_core.context import current_uow
from cqrs_ddd_core.domain.messages import DomainEvent
from cqrs_ddd_core.exceptions import RecordNotFoundError

if TYPE_CHECKING:
    from cqrs_ddd_core.persistence.ports import EventStore, SnapshotStore, UnitOfWork
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
        upcaster: Applied to each stored event before decoding (an
            ``UpcasterRegistry``, or any ``upcast(stored) -> stored``).
        snapshot_store: Where snapshots are read from (and written to).
        snapshot_policy: When to snapshot after a commit (e.g.
            ``EveryNEvents(100)``); needs ``snapshot_store``.

    Raises:
        EventSourcingConfigurationError: an entry of ``event_types`` is not a
            ``DomainEvent`` subclass, or two share a type name; a policy
            without a snapshot store.
    """

    def __init__(
        self,
        event_store: EventStore,
        aggregate_cls: type[TAggregate],
        *,
        event_types: Iterable[type[DomainEvent]],
        upcaster: Upcaster | None = None,
        snapshot_store: SnapshotStore | None = None,
        snapshot_policy: SnapshotPolicy | None = None,
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
        if snapshot_policy is not None and snapshot_store is None:
            raise EventSourcingConfigurationError(
                "a snapshot_policy needs a snapshot_store", aggregate_type=self._aggregate_type
            )
        self._snapshots = snapshot_store
        self._policy = snapshot_policy
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

    @property
    def snapshot_store(self) -> SnapshotStore | None:
        """Where snapshots are read from and written to (``None``: none are used)."""
        return self._snapshots

    async def find(self, aggregate_id: str) -> TAggregate | None:
        """The aggregate at its current version, or ``None`` if its stream is empty.

        From the latest usable snapshot plus the events after it, when there
        is a snapshot store; from the whole stream otherwise.
        """
        aggregate: TAggregate | None = None
        if self._snapshots is not None:
            snapshot = await self._snapshots.latest(self._aggregate_type, aggregate_id)
            aggregate = restore_snapshot(self._aggregate_cls, snapshot)
        from_version = 1 if aggregate is None else aggregate.version + 1
        stream = await self._store.load_stream(
            self._aggregate_type, aggregate_id, from_version=from_version
        )
        if aggregate is None:
            if not stream:
                return None
            aggregate = self._aggregate_cls.blank(aggregate_id)
        for stored in stream:
            event = self.decode(stored)
            if event is not None:
                aggregate.apply(event)
            aggregate.version = stored.version
        aggregate.mark_persisted()
        self.track(aggregate)
        return aggregate

    def track(self, aggregate: TAggregate, *, uow: UnitOfWork | None = None) -> None:
        """Snapshot ``aggregate`` after ``uow`` (default: the running dispatch's)
        commits, if the policy says so then.

        Loads track what they return; call it for an aggregate created in the
        handler. A no-op without a policy or an open unit of work.
        """
        if self._policy is None:
            return
        uow = uow if uow is not None else current_uow()
        if uow is None or not uow.is_open:
            return
        previous = aggregate.original_version
        policy, store = self._policy, self._snapshots

        async def snapshot_after_commit() -> None:
            # Only a committed state: events raised but not handed to the
            # unit of work (still pending) did not commit.
            if store is None or aggregate.pending_events or aggregate.version <= previous:
                return
            if policy(aggregate, previous):
                await take_snapshot(store, aggregate)

        uow.after_commit(snapshot_after_commit)

    async def save_snapshot(self, aggregate: TAggregate) -> bool:
        """Snapshot ``aggregate`` now (its committed state); False if not stored.

        Raises:
            EventSourcingConfigurationError: the repository has no snapshot store.
        """
        if self._snapshots is None:
            raise EventSourcingConfigurationError(
                "save_snapshot needs a snapshot_store", aggregate_type=self._aggregate_type
            )
        return await take_snapshot(self._snapshots, aggregate)

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
