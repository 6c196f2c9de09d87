"""Plain records that cross the persistence ports."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

__all__ = [
    "AuditRecord",
    "DatabaseIdentity",
    "OutboxMessage",
    "OutboxStatus",
    "Snapshot",
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
    """Where an outbox message stands.

    ``DEAD``: the relay gave up after its configured number of attempts; the
    message stays in the outbox (a dead letter) until it is requeued, and the
    later messages of its stream wait behind it (order is kept).
    """

    PENDING = "pending"
    PUBLISHED = "published"
    FAILED = "failed"
    DEAD = "dead"


@dataclass(slots=True)
class OutboxMessage:
    """One message waiting in the outbox to reach the broker.

    ``message_id`` is the id of the event it carries, so a consumer can
    deduplicate. ``aggregate_version`` is the event's version in its stream
    (``None`` for a message of no aggregate). ``trace_context`` holds the W3C ``traceparent`` (and
    ``tracestate``) of the command that created it.

    ``schema_version`` is the schema version ``payload`` has (the event's
    ``schema_version`` when it was written); the relay's upcaster brings it to
    the current one before publishing. ``None`` means unknown (a row written
    before outbox rows recorded it): such a message is published as stored.

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
    aggregate_version: int | None = None
    schema_version: int | None = None


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
class DatabaseIdentity:
    """Which database a step ran against, as the database semantic conventions name it.

    Attributes:
        namespace: ``db.namespace``: the database name (PostgreSQL) or the
            database file (SQLite).
        server_address: ``server.address`` (None for an embedded database).
        server_port: ``server.port`` (None for an embedded database).
    """

    namespace: str | None = None
    server_address: str | None = None
    server_port: int | None = None


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
    rows: int = 0  # rows written (read, for a SELECT); 0 for a failed step
    error_type: str | None = None  # ``error.type``: the qualified name of the error
    database: DatabaseIdentity | None = None  # else the unit of work's ``database``


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An aggregate's state as it was at one version of its stream.

    A snapshot is a cache: losing one costs a longer replay, never data.
    ``schema_version`` is the aggregate class's ``snapshot_schema_version``
    when it was taken; a load that finds another version replays the whole
    stream instead of trusting a stale shape.
    """

    aggregate_type: str
    aggregate_id: str
    version: int
    schema_version: int
    state: dict[str, Any]
    created_at: datetime
