"""Which aggregate types are event-sourced, and appending their events.

The orchestrator turns a command's events into appends: it groups them by
stream in the order they were raised, checks each stream's versions, and asks
the stream's event store to stage them on the unit of work with
``expected_version = first event's aggregate_version - 1``. It never commits;
the unit of work does.

Modes:

* **strict** (the default): an event whose aggregate type was never
  registered raises :class:`EventSourcedAggregateRequiredError`; the command's
  unit of work rolls back, so nothing is persisted.
* **lenient**: such events go to the default event store, and a warning is
  logged once per aggregate type.

In both modes an event without aggregate type or id raises
:class:`UnroutableEventError` and non-contiguous versions raise
:class:`StrictValidationViolationError`: events are never dropped silently.

Non-event-sourced types (registered with :meth:`register_non_event_sourced_type`
or decorated with ``@non_event_sourced``) skip the event store. Their events
still reach the outbox and in-process handlers, which do not consult the
orchestrator.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog

from cqrs_ddd_advanced_core._slot import SlotStaging
from cqrs_ddd_advanced_core.decorators.event_sourcing import (
    aggregate_type_name,
    is_non_event_sourced,
)
from cqrs_ddd_advanced_core.domain.exceptions import (
    EventSourcedAggregateRequiredError,
    EventSourcingConfigurationError,
    StrictValidationViolationError,
    UnroutableEventError,
)
from cqrs_ddd_core._ids import derived_id
from cqrs_ddd_core.context import current_context, current_uow
from cqrs_ddd_core.domain.messages import _evolve
from cqrs_ddd_core.exceptions import UnitOfWorkError

if TYPE_CHECKING:
    from cqrs_ddd_core.cqrs.response import CommandResponse
    from cqrs_ddd_core.domain.messages import DomainEvent
    from cqrs_ddd_core.persistence.ports import EventStore, UnitOfWork

__all__ = ["AppendPlan", "EventSourcedPersistenceOrchestrator"]

_log = structlog.get_logger("cqrs_ddd_advanced_core.event_sourcing")

AppendPlan = tuple["EventStore", str, str, int, list["DomainEvent"]]
"""One append: store, aggregate type, aggregate id, expected version, events."""


class EventSourcedPersistenceOrchestrator:
    """Routes events to event stores, in the command's unit of work.

    Args:
        default_event_store: The store of types registered without a store of
            their own (and, in lenient mode, of unregistered types).
        strict: Refuse events of unregistered aggregate types (the default).

    Example::

        orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=store)
        orchestrator.register_event_sourced_type("Order")
        orchestrator.register_non_event_sourced_type(UserPreferences)
    """

    __slots__ = ("_default", "_skipped", "_stores", "_strict", "_warned")

    def __init__(self, default_event_store: EventStore, *, strict: bool = True) -> None:
        if not callable(getattr(default_event_store, "append", None)):
            raise EventSourcingConfigurationError(
                f"default_event_store must be an EventStore (with append()), "
                f"got {default_event_store!r}"
            )
        self._default = default_event_store
        self._strict = strict
        self._stores: dict[str, EventStore] = {}
        self._skipped: set[str] = set()
        self._warned: set[str] = set()  # lenient mode: types already warned about

    # -- configuration -----------------------------------------------------

    @property
    def default_event_store(self) -> EventStore:
        return self._default

    @property
    def strict(self) -> bool:
        return self._strict

    @property
    def event_sourced_types(self) -> frozenset[str]:
        """The aggregate types registered as event-sourced."""
        return frozenset(self._stores)

    @property
    def non_event_sourced_types(self) -> frozenset[str]:
        """The types registered (or seen decorated) as non-event-sourced."""
        return frozenset(self._skipped)

    def register_event_sourced_type(
        self, aggregate_type: type | str, event_store: EventStore | None = None
    ) -> None:
        """Persist the events of ``aggregate_type`` (a class or its type name) to
        ``event_store``, or to the default store.

        Raises:
            EventSourcingConfigurationError: the type is non-event-sourced
                (registered so, or decorated ``@non_event_sourced``).
        """
        name = aggregate_type_name(aggregate_type)
        if name in self._skipped or is_non_event_sourced(aggregate_type):
            raise EventSourcingConfigurationError(
                f"{name} is non-event-sourced (registered so or decorated @non_event_sourced); "
                "it cannot also be registered as event-sourced",
                aggregate_type=name,
            )
        self._stores[name] = self._default if event_store is None else event_store

    def register_non_event_sourced_type(self, aggregate_type: type | str) -> None:
        """Let the events of ``aggregate_type`` skip the event store.

        Raises:
            EventSourcingConfigurationError: the type is registered as event-sourced.
        """
        name = aggregate_type_name(aggregate_type)
        if name in self._stores:
            raise EventSourcingConfigurationError(
                f"{name} is registered as event-sourced; it cannot also be non-event-sourced",
                aggregate_type=name,
            )
        self._skipped.add(name)

    def is_event_sourced(self, aggregate_type: type | str) -> bool:
        """True when the events of ``aggregate_type`` are appended to an event store
        because it was registered as event-sourced."""
        return aggregate_type_name(aggregate_type) in self._stores

    # -- persisting ------------------------------------------------------------

    async def persist(
        self,
        events: Sequence[DomainEvent],
        *,
        uow: UnitOfWork,
        slot: list[tuple[Any, Any]] | None = None,
    ) -> int:
        """Stage the appends of ``events`` on ``uow`` (in ``slot`` when given).

        Everything is checked before anything is staged.

        Returns:
            The number of events staged for an event store.

        Raises:
            UnroutableEventError, StrictValidationViolationError,
            EventSourcedAggregateRequiredError: see the module docstring.
        """
        plans = self.plan(events)
        if not plans:
            return 0
        target: UnitOfWork = uow if slot is None else SlotStaging(uow, slot)
        count = 0
        for store, aggregate_type, aggregate_id, expected, run in plans:
            await store.append(
                aggregate_type, aggregate_id, run, expected_version=expected, uow=target
            )
            count += len(run)
        return count

    def plan(self, events: Sequence[DomainEvent]) -> list[AppendPlan]:
        """The appends ``events`` need, in the order raised.

        Consecutive events of one stream form one append; a stream that comes
        back later gets another append whose expected version follows on.
        """
        plans: list[AppendPlan] = []
        last_versions: dict[tuple[str, str], int] = {}
        current: tuple[str, str] | None = None
        for event in events:
            aggregate_type = event.aggregate_type
            aggregate_id = event.aggregate_id
            if not aggregate_type or not aggregate_id:
                raise UnroutableEventError(
                    "it has no aggregate type or id; record it through "
                    "AggregateRoot.record_event so it names its stream",
                    event_type=event.type_name(),
                    aggregate_type=aggregate_type,
                    aggregate_id=aggregate_id,
                )
            store = self._route(aggregate_type, event.type_name(), aggregate_id)
            if store is None:
                continue
            key = (aggregate_type, aggregate_id)
            version = event.aggregate_version
            previous = last_versions.get(key)
            if version is None or version < 1:
                raise StrictValidationViolationError(
                    f"its aggregate_version is {version!r}; event-sourced events need 1, 2, ...",
                    event_type=event.type_name(),
                    aggregate_type=aggregate_type,
                    aggregate_id=aggregate_id,
                )
            if previous is not None and version != previous + 1:
                raise StrictValidationViolationError(
                    f"versions are not contiguous: version {version} follows {previous}",
                    event_type=event.type_name(),
                    aggregate_type=aggregate_type,
                    aggregate_id=aggregate_id,
                )
            last_versions[key] = version
            if key == current:
                plans[-1][4].append(event)
            else:
                plans.append((store, aggregate_type, aggregate_id, version - 1, [event]))
                current = key
        return plans

    def _route(
        self, aggregate_type: str, event_type: str, aggregate_id: str | None
    ) -> EventStore | None:
        store = self._stores.get(aggregate_type)
        if store is not None:
            return store
        if aggregate_type in self._skipped:
            return None
        if is_non_event_sourced(aggregate_type):
            self._skipped.add(aggregate_type)
            return None
        if self._strict:
            raise EventSourcedAggregateRequiredError(
                aggregate_type=aggregate_type, event_type=event_type, aggregate_id=aggregate_id
            )
        if aggregate_type not in self._warned:
            self._warned.add(aggregate_type)
            _log.warning(
                "unregistered_aggregate_type_persisted",
                aggregate_type=aggregate_type,
                event_type=event_type,
                hint="register it with register_event_sourced_type or "
                "register_non_event_sourced_type",
            )
        return self._default

    # -- the seed's API --------------------------------------------------------

    async def persist_event(
        self, event: DomainEvent, command_response: CommandResponse[Any] | None = None
    ) -> None:
        """Persist one event in the running dispatch's unit of work.

        See :meth:`persist_events`.
        """
        await self.persist_events((event,), command_response)

    async def persist_events(
        self,
        events: Sequence[DomainEvent],
        command_response: CommandResponse[Any] | None = None,
    ) -> None:
        """Persist ``events`` in the running dispatch's unit of work.

        For code that does not return its events in the command's response
        (with :class:`EventPersistenceMiddleware` listed, returned events are
        persisted already: do one or the other, or the stream conflicts at
        commit; events recorded in the dispatch and persisted here are not
        added to its response). Events without correlation or causation id get those of
        ``command_response`` or, failing that, of the running dispatch.

        Raises:
            UnitOfWorkError: no dispatch with a unit of work is running.
        """
        uow = current_uow()
        if uow is None:
            raise UnitOfWorkError(
                "persist_events needs the unit of work of a running dispatch: call it from a "
                "handler or middleware running inside UnitOfWorkMiddleware"
            )
        await self.persist(_stamped(events, command_response), uow=uow)
        context = current_context()
        if context is not None:  # persisted here: the mediator must not add them again
            context.forget_recorded(events)

    def __repr__(self) -> str:
        mode = "strict" if self._strict else "lenient"
        return (
            f"EventSourcedPersistenceOrchestrator({mode}, default={self._default!r}, "
            f"event_sourced={sorted(self._stores)}, non_event_sourced={sorted(self._skipped)})"
        )


def _stamped(
    events: Sequence[DomainEvent], response: CommandResponse[Any] | None
) -> list[DomainEvent]:
    """``events`` with the correlation and causation ids they lack and, in a
    command's dispatch, a stable id for each one without an explicit
    ``event_id``: derived from the command's message id, the stream and the
    event's ordinal among the events the command gave derived ids on that
    stream in its unit of work, these and those recorded through aggregates
    (see :func:`~cqrs_ddd_core._ids.derived_id`), so a retried command stages the
    same ids. Events recorded through an aggregate have theirs already."""
    correlation_id = response.correlation_id if response is not None else None
    causation_id = response.causation_id if response is not None else None
    context = current_context()
    if (correlation_id is None or causation_id is None) and context is not None:
        correlation_id = correlation_id or context.correlation_id
        causation_id = causation_id or context.message_id
    message_id = context.message_id if context is not None and context.kind == "command" else None
    # The unit of work's count, shared with AggregateRoot.record_event, so the
    # two never hand out the same ordinal (nor do two calls in one command);
    # without one, these events are numbered among themselves.
    ordinals: dict[tuple[str, str, str], int] = {}
    if context is not None and context.ordinals is not None:
        ordinals = context.ordinals
    stamped: list[DomainEvent] = []
    for event in events:
        update: dict[str, Any] = {}
        if event.correlation_id is None or event.causation_id is None:
            update["correlation_id"] = event.correlation_id or correlation_id
            update["causation_id"] = event.causation_id or causation_id
        if message_id is not None and "event_id" not in event.model_fields_set:
            aggregate_type, aggregate_id = event.aggregate_type, event.aggregate_id
            if aggregate_type and aggregate_id:
                key = (message_id, aggregate_type, aggregate_id)
                ordinal = ordinals[key] = ordinals.get(key, 0) + 1
                update["event_id"] = derived_id(message_id, aggregate_type, aggregate_id, ordinal)
        if update:
            event = _evolve(event, update)
        stamped.append(event)
    return stamped
