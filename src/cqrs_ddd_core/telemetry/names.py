"""The telemetry names the library emits (fixed: dashboards depend on them).

Span, metric and attribute names follow the OpenTelemetry semantic
conventions where one applies (``error.type``, ``db.*``) and use the
``cqrs.*`` namespace for the rest. ``docs/observability.md`` lists them with
their Prometheus spellings.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ATTR_AGGREGATE_TYPE",
    "ATTR_CAUSATION_ID",
    "ATTR_CORRELATION_ID",
    "ATTR_DB_BEGIN_MS",
    "ATTR_DB_COLLECTION",
    "ATTR_DB_DURATION_MS",
    "ATTR_DB_FAILED_STEP",
    "ATTR_DB_NAMESPACE",
    "ATTR_DB_OPERATION",
    "ATTR_DB_QUERY_SUMMARY",
    "ATTR_DB_RETURNED_ROWS",
    "ATTR_DB_RETURN_MS",
    "ATTR_DB_ROWS",
    "ATTR_DB_STEP_DURATION_MS",
    "ATTR_DB_SYSTEM",
    "ATTR_DB_WAIT_MS",
    "ATTR_ERROR_TYPE",
    "ATTR_MESSAGE_ID",
    "ATTR_MESSAGE_KIND",
    "ATTR_MESSAGE_TYPE",
    "ATTR_OUTCOME",
    "ATTR_PROJECTION_EVENTS",
    "ATTR_PROJECTION_NAME",
    "ATTR_PROJECTION_POSITION",
    "ATTR_REFUSAL_TYPE",
    "ATTR_SERVER_ADDRESS",
    "ATTR_SERVER_PORT",
    "DURATION_BUCKETS",
    "METRIC_COMMAND_DURATION",
    "METRIC_EVENTS_STORED",
    "METRIC_OUTBOX_ENQUEUED",
    "METRIC_PERSISTENCE_DURATION",
    "METRIC_PROJECTION_BATCH_DURATION",
    "METRIC_PROJECTION_EVENTS_APPLIED",
    "METRIC_PROJECTION_LAG",
    "METRIC_PROJECTION_LAG_POSITIONS",
    "METRIC_QUERY_DURATION",
    "NO_AGGREGATE_TYPE",
    "OUTCOME_ERROR",
    "OUTCOME_REFUSED",
    "OUTCOME_SUCCESS",
    "SCOPE_NAME",
    "SPAN_PROJECTION_BATCH",
]

SCOPE_NAME: Final = "cqrs_ddd"
"""Instrumentation scope name of every tracer and meter the library uses."""

# -- span and metric attributes -----------------------------------------------
ATTR_MESSAGE_TYPE: Final = "cqrs.message.type"
ATTR_MESSAGE_ID: Final = "cqrs.message.id"
ATTR_MESSAGE_KIND: Final = "cqrs.message.kind"
ATTR_CORRELATION_ID: Final = "cqrs.correlation_id"
ATTR_CAUSATION_ID: Final = "cqrs.causation_id"
ATTR_OUTCOME: Final = "cqrs.outcome"
ATTR_AGGREGATE_TYPE: Final = "cqrs.aggregate.type"
ATTR_ERROR_TYPE: Final = "error.type"
"""The qualified class name of the error (``cqrs_ddd_core.exceptions.PersistenceError``),
on spans, metrics and (as ``error_type``) logs alike; builtins keep their bare name."""
ATTR_REFUSAL_TYPE: Final = "cqrs.refusal.type"
"""Of a refused dispatch (``cqrs.outcome="refused"``): the refusal's qualified class name."""

# Database semantic conventions (stable names, semconv >= 1.26).
ATTR_DB_SYSTEM: Final = "db.system.name"
ATTR_DB_OPERATION: Final = "db.operation.name"
ATTR_DB_COLLECTION: Final = "db.collection.name"
ATTR_DB_NAMESPACE: Final = "db.namespace"
ATTR_DB_QUERY_SUMMARY: Final = "db.query.summary"
ATTR_DB_RETURNED_ROWS: Final = "db.response.returned_rows"
ATTR_SERVER_ADDRESS: Final = "server.address"
ATTR_SERVER_PORT: Final = "server.port"
ATTR_DB_ROWS: Final = "cqrs.db.rows"
"""Rows the step wrote (semconv has ``db.response.returned_rows`` for reads only)."""
ATTR_DB_BEGIN_MS: Final = "cqrs.db.begin_ms"
"""On the step span a ``BEGIN`` was folded into: how long ``BEGIN`` took, in ms."""
ATTR_DB_STEP_DURATION_MS: Final = "cqrs.db.step.{step}_ms"
"""On a ``persistence_spans="commit"`` span, per step: its duration in ms; ``{step}``
is the step span's name in lower case with ``_`` for spaces (``insert_events``, ``commit``)."""
ATTR_DB_DURATION_MS: Final = "cqrs.db.duration_ms"
"""On a step's span event (``persistence_spans="events"``): how long the step took, in ms."""
ATTR_DB_WAIT_MS: Final = "cqrs.db.wait_ms"
"""On the first step span of a commit: how long the commit waited before its first
step started on the database side (a writer thread's queue, a group commit, a pooled
connection), in ms; the span starts when the commit was asked for."""
ATTR_DB_RETURN_MS: Final = "cqrs.db.return_ms"
"""On the last step span of a commit: how long after its end the caller got the
outcome back (the hop back from a writer thread...), in ms; the span ends then."""
ATTR_DB_FAILED_STEP: Final = "cqrs.db.failed_step"
"""On a failed ``persistence_spans="commit"`` span: the step that failed (``INSERT events``)."""

OUTCOME_SUCCESS: Final = "success"
OUTCOME_ERROR: Final = "error"
OUTCOME_REFUSED: Final = "refused"
"""An expected refusal (a business rule, a version conflict): a result, not an error."""
NO_AGGREGATE_TYPE: Final = "none"
"""``cqrs.aggregate.type`` of a commit that persisted no events."""

# -- metrics --------------------------------------------------------------------
METRIC_COMMAND_DURATION: Final = "cqrs.command.duration"
METRIC_QUERY_DURATION: Final = "cqrs.query.duration"
METRIC_PERSISTENCE_DURATION: Final = "cqrs.persistence.duration"
METRIC_EVENTS_STORED: Final = "cqrs.events.stored"
"""Observable counter: events appended to an event store by committed units of work
(``cqrs_events_stored_total``), counted by the library and read when the SDK collects."""
METRIC_OUTBOX_ENQUEUED: Final = "cqrs.outbox.enqueued"
"""Observable counter: messages written to an outbox by committed units of work
(``cqrs_outbox_enqueued_total``), counted by the library and read when the SDK collects."""

# -- projections ------------------------------------------------------------------
SPAN_PROJECTION_BATCH: Final = "projection {projection}"
"""The span of one projection batch (INTERNAL); ``{projection}`` is the projection's name."""
ATTR_PROJECTION_NAME: Final = "cqrs.projection.name"
ATTR_PROJECTION_EVENTS: Final = "cqrs.projection.events"
"""On a batch span: the events the batch read (and applied, when it committed)."""
ATTR_PROJECTION_POSITION: Final = "cqrs.projection.position"
"""On a batch span: the checkpoint the batch moved to (or would have)."""
METRIC_PROJECTION_EVENTS_APPLIED: Final = "cqrs.projection.events.applied"
"""Counter: events whose batch committed, by projection."""
METRIC_PROJECTION_LAG_POSITIONS: Final = "cqrs.projection.lag.positions"
"""Gauge: the events store's head position minus the projection's checkpoint."""
METRIC_PROJECTION_LAG: Final = "cqrs.projection.lag"
"""Gauge, seconds: how old the last applied event is while the projection is behind
the head, 0 when it has caught up."""
METRIC_PROJECTION_BATCH_DURATION: Final = "cqrs.projection.batch.duration"
"""Histogram, seconds: reading, applying and committing one batch."""

DURATION_BUCKETS: Final[tuple[float, ...]] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Histogram bucket boundaries in seconds, 1 ms to 10 s (the SDK's defaults are for ms)."""
