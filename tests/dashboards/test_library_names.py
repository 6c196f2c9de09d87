"""The names the dashboard queries are the names the library's own instruments expose.

``_emitter.py`` and ``telemetry_names.py`` copy docs/design.md; this test ties them to the
code: it records through ``cqrs_ddd_core``'s ``Instruments`` and ``commit_counts`` (with
the attribute constants of ``cqrs_ddd_core.telemetry.names``) into the OpenTelemetry
Prometheus exporter, in a fresh interpreter (the exporter registers with prometheus_client's
global registry), and compares the exposition with what the dashboard expects.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

from cqrs_ddd_core.telemetry import names
from tests.dashboards.telemetry_names import BUCKETS, COMMON_LABELS, SERIES_LABELS

EXPOSE = textwrap.dedent(
    """
    import json
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from prometheus_client import REGISTRY, generate_latest

    from cqrs_ddd_core.telemetry import commit_counts, get_meter
    from cqrs_ddd_core.telemetry import names as n
    from cqrs_ddd_core.telemetry.instruments import Instruments

    provider = MeterProvider(metric_readers=[PrometheusMetricReader()])
    instruments = Instruments(get_meter(provider))
    ok = {n.ATTR_MESSAGE_TYPE: "PlaceOrder", n.ATTR_OUTCOME: n.OUTCOME_SUCCESS}
    failed = {
        n.ATTR_MESSAGE_TYPE: "PlaceOrder",
        n.ATTR_OUTCOME: n.OUTCOME_ERROR,
        n.ATTR_ERROR_TYPE: "builtins.RuntimeError",
    }
    refused = {
        n.ATTR_MESSAGE_TYPE: "PlaceOrder",
        n.ATTR_OUTCOME: n.OUTCOME_REFUSED,
        n.ATTR_REFUSAL_TYPE: "cqrs_ddd_core.exceptions.ConcurrencyError",
    }
    instruments.command_duration.record(0.003, ok)
    instruments.command_duration.record(0.004, failed)
    instruments.command_duration.record(0.004, refused)
    instruments.query_duration.record(0.0005, {**ok, n.ATTR_MESSAGE_TYPE: "GetOrder"})
    instruments.persistence_duration.record(0.002, {n.ATTR_AGGREGATE_TYPE: "Order"})
    commit_counts(provider).add({"Order": 3}, {"Order": 4})
    print(json.dumps(generate_latest(REGISTRY).decode()))
    """
)

SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")


def _exposition() -> dict[str, list[dict[str, str]]]:
    completed = subprocess.run(
        [sys.executable, "-c", EXPOSE], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr
    series: dict[str, list[dict[str, str]]] = {}
    for line in json.loads(completed.stdout).splitlines():
        match = SAMPLE.match(line)
        if line.startswith("#") or match is None or not match["name"].startswith("cqrs_"):
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match["labels"] or ""))
        series.setdefault(match["name"], []).append(labels)
    return series


def test_the_library_exposes_exactly_the_series_the_dashboard_queries() -> None:
    series = _exposition()
    assert set(series) == set(SERIES_LABELS)
    for name, samples in series.items():
        for labels in samples:
            # the exporter writes error_type="" on the success series; Prometheus drops it
            present = {key for key, value in labels.items() if value}
            assert present - COMMON_LABELS <= SERIES_LABELS[name], (name, labels)
            assert labels["otel_scope_name"] == names.SCOPE_NAME
    buckets = {labels["le"] for labels in series["cqrs_persistence_duration_seconds_bucket"]} - {
        "+Inf"
    }
    assert sorted(float(le) for le in buckets) == [float(b) for b in BUCKETS]
    failed = [
        s for s in series["cqrs_command_duration_seconds_count"] if s["cqrs_outcome"] == "error"
    ]
    assert [s["error_type"] for s in failed] == ["builtins.RuntimeError"]
    (refused,) = [
        s for s in series["cqrs_command_duration_seconds_count"] if s["cqrs_outcome"] == "refused"
    ]
    assert refused["cqrs_refusal_type"] == "cqrs_ddd_core.exceptions.ConcurrencyError"


def test_the_dashboard_buckets_are_the_library_s() -> None:
    assert tuple(float(b) for b in names.DURATION_BUCKETS) == tuple(float(b) for b in BUCKETS)
