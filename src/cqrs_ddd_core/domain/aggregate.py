"""Aggregate roots: identity, version, and the events they record."""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, PrivateAttr

from cqrs_ddd_core.domain.messages import DomainEvent

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

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("aggregate_type"):
            cls.aggregate_type = cls.__name__

    @classmethod
    def type_name(cls) -> str:
        """The stream type name of this aggregate."""
        return cls.aggregate_type or cls.__name__

    @property
    def original_version(self) -> int:
        """The version the aggregate was loaded (or created) at.

        It is the expected version when the aggregate's new events are
        appended or its state is saved, even after :meth:`collect_events`.
        """
        return self.version if self._original_version is None else self._original_version

    def mark_persisted(self) -> None:
        """Make the current version the new baseline (after a successful save)."""
        self._original_version = self.version

    @property
    def pending_events(self) -> tuple[DomainEvent, ...]:
        """Events recorded and not yet collected, in the order raised."""
        return tuple(self._pending)

    def record_event(self, event: TEvent) -> TEvent:
        """Stamp ``event`` with this aggregate's identity and next version, and keep it.

        Returns the stamped copy (events are immutable).
        """
        if self._original_version is None:
            self._original_version = self.version
        self.version += 1
        stamped = event.model_copy(
            update={
                "aggregate_id": self.id,
                "aggregate_type": self.type_name(),
                "aggregate_version": self.version,
            }
        )
        self._pending.append(stamped)
        return stamped

    def collect_events(self) -> tuple[DomainEvent, ...]:
        """Return the pending events in the order raised and forget them."""
        events = tuple(self._pending)
        self._pending.clear()
        return events
