"""The exemplar-serving Prometheus reader: the exporter's names, plus each bucket's exemplar."""

from __future__ import annotations

import re

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from cqrs_ddd_core.telemetry import commit_counts, get_meter
from cqrs_ddd_core.telemetry.instruments import Instruments
from cqrs_ddd_core.telemetry.openmetrics import ExemplarPrometheusReader

SUCCESS = {"cqrs.message.type": "PlaceOrder", "cqrs.outcome": "success"}
REFUSED = {
    "cqrs.message.type": "PlaceOrder",
    "cqrs.outcome": "refused",
    "cqrs.refusal.type": "cqrs_ddd_core.exceptions.ConcurrencyError",
}


def _record(registry: CollectorRegistry, exemplars: bool) -> tuple[MeterProvider, list[str]]:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader

    reader = (
        ExemplarPrometheusReader(registry)
        if exemplars
        else PrometheusMetricReader(registry=registry)
    )
    meters = MeterProvider(metric_readers=[reader])
    tracer = TracerProvider().get_tracer("test")
    instruments = Instruments(get_meter(meters))
    trace_ids = []
    with tracer.start_as_current_span("command PlaceOrder") as span:
        instruments.command_duration.record(0.003, SUCCESS)
        trace_ids.append(format(span.get_span_context().trace_id, "032x"))
    with tracer.start_as_current_span("command PlaceOrder") as span:
        instruments.command_duration.record(0.2, REFUSED)
        trace_ids.append(format(span.get_span_context().trace_id, "032x"))
    instruments.command_duration.record(0.004, SUCCESS)  # outside a span: no exemplar
    commit_counts(meters).add({"Order": 2}, {})
    return meters, trace_ids


def _series(text: str) -> set[str]:
    return {
        line.split(" ")[0]
        for line in text.splitlines()
        if line and not line.startswith("#") and "cqrs_" in line
    }


def test_each_bucket_serves_the_exemplar_of_a_measurement_made_in_a_span() -> None:
    registry = CollectorRegistry()
    meters, (first, second) = _record(registry, exemplars=True)
    text = generate_openmetrics(registry).decode()
    meters.shutdown()

    exemplars = re.findall(
        r'^(cqrs_command_duration_seconds_bucket\{[^}]*le="([^"]+)"[^}]*\}) \S+ '
        r'# \{span_id="[0-9a-f]{16}",trace_id="([0-9a-f]{32})"\} (\S+)',
        text,
        re.M,
    )
    by_trace = {trace: (le, float(value)) for _, le, trace, value in exemplars}
    assert by_trace == {first: ("0.005", 0.003), second: ("0.25", 0.2)}
    refused = next(series for series, _, trace, _ in exemplars if trace == second)
    assert 'cqrs_outcome="refused"' in refused
    assert "# {" not in "".join(line for line in text.splitlines() if "_total" in line)


def test_the_names_are_the_exporter_s_and_the_text_format_carries_no_exemplar() -> None:
    plain, served = CollectorRegistry(), CollectorRegistry()
    plain_meters, _ = _record(plain, exemplars=False)
    served_meters, _ = _record(served, exemplars=True)
    expected = _series(generate_openmetrics(plain).decode())
    assert _series(generate_openmetrics(served).decode()) == expected
    assert "trace_id" not in generate_latest(served).decode()  # the 0.0.4 text format
    plain_meters.shutdown()
    served_meters.shutdown()
    assert list(served.collect()) == []  # shut down: unregistered
