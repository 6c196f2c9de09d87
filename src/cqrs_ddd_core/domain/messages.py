"""Messages: commands, queries and domain events (immutable pydantic models)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from cqrs_ddd_core._ids import new_id

__all__ = ["Command", "DomainEvent", "Message", "Query", "new_id", "utc_now"]

TResult = TypeVar("TResult")


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


class Message(BaseModel):
    """Base of commands, queries and events: immutable, with an id.

    ``correlation_id`` may be set by the sender; when it is not, the mediator
    takes the ambient one or, for a message that starts a flow, its own
    ``message_id`` (see :mod:`cqrs_ddd_core.context`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    message_id: str = Field(default_factory=new_id)
    correlation_id: str | None = None

    @classmethod
    def type_name(cls) -> str:
        """The stable name of this message type (the class name by default)."""
        return cls.__name__


class Command(Message, Generic[TResult]):
    """A request to change state. ``TResult`` is the handler's result type."""


class Query(Message, Generic[TResult]):
    """A request to read state. ``TResult`` is the handler's result type."""


class DomainEvent(BaseModel):
    """Something that happened to an aggregate.

    The aggregate stamps ``aggregate_id``, ``aggregate_type`` and
    ``aggregate_version`` when it records the event; the persistence
    middleware stamps ``correlation_id`` and ``causation_id`` from the
    command that raised it.

    Subclasses add their own fields. ``event_type`` (a class variable) is the
    stored type name; it defaults to the class name.
    """

    # Non-finite floats have no JSON form; refuse them when the event is made
    # rather than store them lossily.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    event_type: ClassVar[str] = ""

    event_id: str = Field(default_factory=new_id)
    occurred_at: datetime = Field(default_factory=utc_now)
    aggregate_id: str | None = None
    aggregate_type: str | None = None
    aggregate_version: int | None = None
    schema_version: int = 1
    correlation_id: str | None = None
    causation_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("event_type"):
            cls.event_type = cls.__name__

    @classmethod
    def type_name(cls) -> str:
        """The stored type name of this event."""
        return cls.event_type or cls.__name__

    def payload(self) -> dict[str, Any]:
        """The event's own fields (those a subclass adds), JSON-ready."""
        return self.model_dump(mode="json", exclude=set(_ENVELOPE_FIELDS))


_ENVELOPE_FIELDS = frozenset(DomainEvent.model_fields)
