"""Turning a domain event into the outbox message that carries it."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from opentelemetry import propagate, trace

from cqrs_ddd_core.domain.messages import DomainEvent, utc_now
from cqrs_ddd_core.persistence.records import OutboxMessage
from cqrs_ddd_core.persistence.serialization import hand_over_payload_json

__all__ = ["current_trace_context", "message_from_event"]


def current_trace_context() -> dict[str, str]:
    """The current span's context in the application's propagation format.

    With OpenTelemetry's default propagators that is W3C ``traceparent`` (and
    ``tracestate`` when set, plus ``baggage``). Empty when no valid span is
    current (no SDK, or no trace): then nothing is injected at all, which keeps
    the untraced path cheap. Only the OpenTelemetry API is used.
    """
    if not trace.get_current_span().get_span_context().is_valid:
        return {}
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def message_from_event(
    event: DomainEvent,
    *,
    trace_context: Mapping[str, str] | None = None,
    created_at: datetime | None = None,
) -> OutboxMessage:
    """The outbox message for ``event``: its id is the event id (consumers
    deduplicate on it), its type the event type, its payload the event's own
    fields (JSON-ready), also as JSON text for the stores, and its schema
    version the event's (the relay upcasts from it).

    Raises:
        SerializationError: a field of the event has no JSON form.
    """
    payload = event.payload()
    payload_json = event.payload_json()
    hand_over_payload_json(event, payload_json)  # the event store needs it next
    return OutboxMessage(
        message_id=event.event_id,
        message_type=event.type_name(),
        payload=payload,
        payload_json=payload_json,
        created_at=utc_now() if created_at is None else created_at,
        aggregate_type=event.aggregate_type,
        aggregate_id=event.aggregate_id,
        aggregate_version=event.aggregate_version,
        schema_version=event.schema_version,
        correlation_id=event.correlation_id,
        causation_id=event.causation_id,
        trace_context=dict(trace_context) if trace_context else {},
    )
