"""Plain records that cross the persistence ports."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

__all__ = [
    "AuditRecord",
    "OutboxMessage",
    "OutboxStatus",
    "StepTiming",
    "StoredEvent",
    "stream_name",
]


def stream_name(aggregate_type: str, aggregate_id: str) -> str:
    """The canonical name of an aggregate's event stream."""
    return f"{aggregate_type}:{aggregate_id}"


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as the event store holds it.

    ``position`` orders all events of the store; ``version`` orders the events
    of one stream, from 1.
    """

    position: int
    event_id: str
    aggregate_type: str
    aggregate_id: str
    version: int
    event_type: str
    schema_version: int
    payload: dict[str, Any]
    metadata: dict[str, Any]
    occurred_at: datetime
    correlation_id: str | None
    causation_id: str | None

    @property
    def stream(self) -> str:
        """``"<aggregate type>:<aggregate id>"``."""
        return stream_name(self.aggregate_type, self.aggregate_id)


class OutboxStatus(StrEnum):
    """Where an outbox message stands: waiting, sent, or given up on."""

    PENDING = "pending"
    PUBLISHED = "published"
    FAILED = "failed"


@dataclass(slots=True)
class OutboxMessage:
    """One message waiting in the outbox to reach the broker.

    ``message_id`` is the id of the event it carries, so a consumer can
    deduplicate. ``trace_context`` holds the W3C ``traceparent`` (and
    ``tracestate``) of the command that created it.

    ``payload_json`` is ``payload`` as JSON text, when whoever made the
    message has it already (``message_from_event`` does): the SQL outbox
    then stores it instead of serialising ``payload`` a second time. It must
    say what ``payload`` says; leave it ``None`` otherwise.
    """

    message_id: str
    message_type: str
    payload: dict[str, Any]
    created_at: datetime
    aggregate_type: str | None = None
    aggregate_id: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    trace_context: dict[str, str] = field(default_factory=dict)
    status: OutboxStatus = OutboxStatus.PENDING
    attempts: int = 0
    next_attempt_at: datetime | None = None
    last_error: str | None = None
    published_at: datetime | None = None
    payload_json: str | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """Who sent what, when, and how it ended.

    ``outcome`` is ``"success"``, ``"error"`` (the dispatch raised) or
    ``"rolled_back"`` (the dispatch returned but its transaction did not commit).
    """

    audit_id: str
    message_id: str
    message_type: str
    correlation_id: str
    causation_id: str | None
    actor: str | None
    outcome: str
    error_type: str | None
    started_at: datetime
    duration_ms: float
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StepTiming:
    """One persistence step measured by a unit of work at commit.

    Tracing turns these into child spans (with the times they really had) and
    metrics into ``cqrs.persistence.duration``; the adapters need no
    telemetry code of their own.
    """

    operation: str  # "INSERT", "UPDATE", "COMMIT", ...
    collection: str | None  # table name, None for COMMIT
    system: str  # "sqlite", "postgresql", "memory"
    start_ns: int  # time.time_ns() when the step began
    end_ns: int
    rows: int = 0
    error_type: str | None = None
