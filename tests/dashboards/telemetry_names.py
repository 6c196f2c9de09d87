"""The Prometheus side of docs/design.md "Telemetry names" (fixed; the dashboards depend on it).

As the OpenTelemetry Prometheus exporter (opentelemetry-exporter-prometheus) exposes them:
dots become underscores, unit ``s`` adds ``_seconds``, counters get ``_total``, histograms
``_bucket``/``_count``/``_sum`` with ``le``; Prometheus adds ``job`` and ``instance``, the
exporter ``otel_scope_name``/``otel_scope_version``/``otel_scope_schema_url``.
"""

from __future__ import annotations

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

HISTOGRAMS = {
    "cqrs_command_duration_seconds": {
        "cqrs_message_type",
        "cqrs_outcome",
        "error_type",
        "cqrs_refusal_type",
    },
    "cqrs_query_duration_seconds": {
        "cqrs_message_type",
        "cqrs_outcome",
        "error_type",
        "cqrs_refusal_type",
    },
    "cqrs_persistence_duration_seconds": {"cqrs_aggregate_type"},
}
COUNTERS = {
    "cqrs_events_stored_total": {"cqrs_aggregate_type"},
    "cqrs_outbox_enqueued_total": {"cqrs_aggregate_type"},
}
TOTALS = {
    "Events stored": "events stored",
    "Outbox enqueued": "outbox enqueued",
    "Queries": "queries",
}
"""Stat panels showing a counter's total -> the demo's summary line of the same name."""

SERIES_LABELS: dict[str, set[str]] = {
    **{
        f"{name}_{suffix}": labels
        for name, labels in HISTOGRAMS.items()
        for suffix in ("count", "sum")
    },
    **{f"{name}_bucket": labels | {"le"} for name, labels in HISTOGRAMS.items()},
    **COUNTERS,
}
COMMON_LABELS = {
    "job",
    "instance",
    "otel_scope_name",
    "otel_scope_version",
    "otel_scope_schema_url",
}
