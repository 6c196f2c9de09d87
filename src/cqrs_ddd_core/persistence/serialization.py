"""Turning events into storable rows, once, before anything is written.

Serialising at staging time means a payload that cannot be stored fails the
command inside its handler's transaction, before any row is written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cqrs_ddd_core.domain.messages import DomainEvent
from cqrs_ddd_core.exceptions import SerializationError
from cqrs_ddd_core.persistence.limits import check_json_text, check_name, check_stream, names_ok

__all__ = [
    "AppendBatch",
    "PendingEvent",
    "dumps",
    "encode_append",
    "encode_event",
    "envelope_fields",
    "hand_over_payload_json",
]

_ENVELOPE = frozenset(DomainEvent.model_fields)


def envelope_fields() -> frozenset[str]:
    """The fields every event has; the rest of an event's fields are its payload."""
    return _ENVELOPE


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """An event serialised and numbered, waiting for its transaction to commit."""

    event_id: str
    aggregate_type: str
    aggregate_id: str
    version: int
    event_type: str
    schema_version: int
    payload_json: str
    metadata_json: str
    occurred_at: datetime
    correlation_id: str | None
    causation_id: str | None


# Built once: json.dumps with any non-default option builds an encoder per call.
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def dumps(value: Any, type_name: str) -> str:
    """JSON text of ``value``; raises :class:`SerializationError` if it has none."""
    try:
        return _encode(value)
    except (TypeError, ValueError) as exc:
        raise SerializationError(type_name, str(exc)) from exc


_handed: tuple[DomainEvent | None, str] = (None, "")


def hand_over_payload_json(event: DomainEvent, payload_json: str) -> None:
    """Leave ``event.payload_json()``, just computed, for the next :func:`encode_event`
    of the same event object (the outbox step serialises the payload a moment
    before the event store does, in the same dispatch). One event is kept,
    and taken once, so no stale text can outlive that hand-over."""
    global _handed
    _handed = (event, payload_json)


def _payload_json(event: DomainEvent) -> str:
    global _handed
    handed = _handed
    if handed[0] is event:
        _handed = (None, "")
        return handed[1]
    return event.payload_json()


def encode_event(
    event: DomainEvent, aggregate_type: str, aggregate_id: str, version: int
) -> PendingEvent:
    """Serialise ``event`` as version ``version`` of the given stream.

    Raises:
        SerializationError: the payload or metadata is not JSON-serialisable.
        StorageLimitError: a name, id or text breaks an input rule.
    """
    type_name = event.type_name()
    payload_json = _payload_json(event)
    metadata_json = dumps(event.metadata, type_name) if event.metadata else "{}"
    # The same input rules on every backend, before any SQL (see limits):
    # the common case in one call, else each rule for the precise error.
    event_id = event.event_id
    if not (
        event_id is not None
        and names_ok(type_name, event_id, event.correlation_id, event.causation_id)
        and payload_json.isascii()
        and metadata_json.isascii()
    ):
        check_name(type_name, "event_type", type_name)
        check_name(type_name, "event_id", event_id)
        check_name(type_name, "correlation_id", event.correlation_id, optional=True)
        check_name(type_name, "causation_id", event.causation_id, optional=True)
        check_json_text(type_name, "payload", payload_json)
        check_json_text(type_name, "metadata", metadata_json)
    return PendingEvent(
        event_id=event.event_id,
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        version=version,
        event_type=type_name,
        schema_version=event.schema_version,
        payload_json=payload_json,
        metadata_json=metadata_json,
        occurred_at=event.occurred_at,
        correlation_id=event.correlation_id,
        causation_id=event.causation_id,
    )


AppendBatch = tuple[str, str, int, list[PendingEvent]]
"""What an event store stages for one append: stream type, stream id, the
expected version, and the events serialised as versions expected+1..."""


def encode_append(
    aggregate_type: str, aggregate_id: str, events: Sequence[DomainEvent], expected_version: int
) -> AppendBatch:
    """Serialise ``events`` as the next versions of a stream, ready to stage.

    Raises:
        SerializationError: an event's payload or metadata is not JSON-serialisable.
        StorageLimitError: a name, id or text breaks an input rule (see
            :mod:`cqrs_ddd_core.persistence.limits`); nothing is staged.
    """
    check_stream(events[0].type_name() if events else "append", aggregate_type, aggregate_id)
    return (
        aggregate_type,
        aggregate_id,
        expected_version,
        [
            encode_event(event, aggregate_type, aggregate_id, expected_version + offset)
            for offset, event in enumerate(events, start=1)
        ],
    )
