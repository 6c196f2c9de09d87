"""Aggregate roots: identity, version, and the events they record."""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, PrivateAttr

from cqrs_ddd_core._ids import derived_id
from cqrs_ddd_core.context import _current
from cqrs_ddd_core.domain.messages import DomainEvent, _evolve

__all__ = ["AggregateRoot"]

TEvent = TypeVar("TEvent", bound=DomainEvent)


class AggregateRoot(BaseModel):
    """A consistency boundary that records domain events.

    ``version`` counts the events the aggregate has recorded over its life:
    an aggregate loaded at version 4 that records two events is at version 6,
    and those events carry ``aggregate_version`` 5 and 6. The event stream's
    versions are therefore always 1..n, and the version the aggregate was
    loaded at (:attr:`original_version`) is the expected version when its
    events are appended.

    ``aggregate_type`` (a class variable) names the stream type; it defaults
    to the class name.
    """

    model_config = ConfigDict(validate_assignment=False, extra="forbid")

    aggregate_type: ClassVar[str] = ""

    id: str
    version: int = 0

    _pending: list[DomainEvent] = PrivateAttr(default_factory=list)
    _original_version: int | None = PrivateAttr(default=None)
    # (message id, events recorded under it): the ordinal of derived event ids
    # when no unit of work counts them (see record_event); None until then.
    # (None, not unset: pydantic deep-copies an unset default into every new
    # instance, about 1.5 µs per aggregate; None it takes as it is.)
    _ordinal: tuple[str | None, int] | None = PrivateAttr(default=None)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("aggregate_type"):
            cls.aggregate_type = cls.__name__

    @classmethod
    def type_name(cls) -> str:
        """The stream type name of this aggregate."""
        return cls.aggregate_type or cls.__name__

    # Private attributes are read and written through __pydantic_private__
    # directly: attribute access to them goes through pydantic's __getattr__,
    # which raises and catches an AttributeError on every read (several per
    # command, a few microseconds each).

    @property
    def original_version(self) -> int:
        """The version the aggregate was loaded (or created) at.

        It is the expected version when the aggregate's new events are
        appended or its state is saved, even after :meth:`collect_events`.
        """
        original: int | None = self.__pydantic_private__["_original_version"]  # type: ignore[index]
        return self.version if original is None else original

    def mark_persisted(self) -> None:
        """Make the current version the new baseline (after a successful save)."""
        self.__pydantic_private__["_original_version"] = self.version  # type: ignore[index]

    @property
    def pending_events(self) -> tuple[DomainEvent, ...]:
        """Events recorded and not yet collected, in the order raised."""
        return tuple(self.__pydantic_private__["_pending"])  # type: ignore[index]

    def record_event(self, event: TEvent) -> TEvent:
        """Stamp ``event`` with this aggregate's identity and next version, and keep it.

        Recorded while a command is dispatched, the event also gets that
        command's correlation id and the command as its cause (unless it
        names them itself), so the mediator has nothing left to stamp; it is
        persisted with that command even if the handler does not return it
        (the mediator adds it to the response's events); and, unless it was
        given an ``event_id`` explicitly, its id is derived from the
        command's message id, the stream and the event's ordinal among the
        events the command records on that stream in its unit of work, on
        whichever instance of the aggregate (:func:`~cqrs_ddd_core._ids.derived_id`):
        the same command run again (a retry, same message id) records the same
        ids, so a unit of work that committed before is recognised and not
        written twice (see "Commit outcomes" in ``docs/persistence.md``).

        Returns the stamped copy (events are immutable).
        """
        private: dict[str, Any] = self.__pydantic_private__  # type: ignore[assignment]
        if private["_original_version"] is None:
            private["_original_version"] = self.version
        version = self.version + 1
        self.version = version
        update: dict[str, Any] = {
            "aggregate_id": self.id,
            "aggregate_type": self.type_name(),
            "aggregate_version": version,
        }
        context = _current.get()
        if context is not None and context.kind == "command":
            if event.correlation_id is None:
                update["correlation_id"] = context.correlation_id
            if event.causation_id is None:
                update["causation_id"] = context.message_id
            if "event_id" not in event.__pydantic_fields_set__:
                # Stable across runs of this command (a retry stages the same
                # ids): the command's id, the stream, and the event's ordinal
                # among the events this command recorded on it in this unit of
                # work, whichever instance of the aggregate recorded them (two
                # objects for one stream must not hand out the same id).
                message_id = context.message_id
                aggregate_type = update["aggregate_type"]
                ordinals = context.ordinals
                if ordinals is not None:
                    key = (message_id, aggregate_type, self.id)
                    count = ordinals[key] = ordinals.get(key, 0) + 1
                else:
                    # No unit of work to count in: count on this instance.
                    counted_for, count = private.get("_ordinal") or (None, 0)
                    count = count + 1 if counted_for == message_id else 1
                    private["_ordinal"] = (message_id, count)
                update["event_id"] = derived_id(message_id, aggregate_type, self.id, count)
        stamped = _evolve(event, update)
        private["_pending"].append(stamped)
        if context is not None and context.kind == "command":
            # So the mediator can persist it even if the handler does not return it.
            recorded = context.recorded
            if recorded is None:
                context.recorded = [(self, stamped)]
            else:
                recorded.append((self, stamped))
        return stamped

    def _forget(self, events: list[DomainEvent]) -> None:
        """Drop ``events`` (by identity) from the pending ones: they are persisted."""
        pending: list[DomainEvent] = self.__pydantic_private__["_pending"]  # type: ignore[index]
        if pending:
            ids = {id(event) for event in events}
            pending[:] = [event for event in pending if id(event) not in ids]

    def collect_events(self) -> tuple[DomainEvent, ...]:
        """Return the pending events in the order raised and forget them."""
        pending: list[DomainEvent] = self.__pydantic_private__["_pending"]  # type: ignore[index]
        events = tuple(pending)
        pending.clear()
        return events
