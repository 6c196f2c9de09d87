"""The Prometheus exposition the dashboards read: metric and label names, buckets, /metrics."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from cqrs_ddd_core.telemetry.setup import Telemetry, setup_telemetry
from tests.observability.app import (
    Explode,
    FixedTimingUnitOfWork,
    GetOrder,
    PlaceOrder,
    Shop,
    build_mediator,
)

SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
LABEL = re.compile(r'(?P<key>[a-zA-Z_][a-zA-Z0-9_]*)="(?P<value>(?:[^"\\]|\\.)*)"')
SCOPE_LABELS = {"otel_scope_name", "otel_scope_version", "otel_scope_schema_url"}

# docs/design.md "Telemetry names" and docs/observability.md, as Prometheus spells them.
EXPECTED_LABELS = {
    "cqrs_command_duration_seconds_bucket": {
        "cqrs_message_type",
        "cqrs_outcome",
        "error_type",
        "le",
    },
    "cqrs_command_duration_seconds_count": {"cqrs_message_type", "cqrs_outcome", "error_type"},
    "cqrs_command_duration_seconds_sum": {"cqrs_message_type", "cqrs_outcome", "error_type"},
    "cqrs_query_duration_seconds_bucket": {"cqrs_message_type", "cqrs_outcome", "le"},
    "cqrs_query_duration_seconds_count": {"cqrs_message_type", "cqrs_outcome"},
    "cqrs_query_duration_seconds_sum": {"cqrs_message_type", "cqrs_outcome"},
    "cqrs_persistence_duration_seconds_bucket": {"cqrs_aggregate_type", "le"},
    "cqrs_persistence_duration_seconds_count": {"cqrs_aggregate_type"},
    "cqrs_persistence_duration_seconds_sum": {"cqrs_aggregate_type"},
    "cqrs_events_stored_total": {"cqrs_aggregate_type"},
    "cqrs_outbox_enqueued_total": {"cqrs_aggregate_type"},
}
BUCKET_BOUNDS = [
    "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5",
    "5.0", "10.0", "+Inf",
]  # fmt: skip


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    found = []
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match:
            labels = {m["key"]: m["value"] for m in LABEL.finditer(match["labels"])}
            found.append((match["name"], labels, float(match["value"])))
    return found


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def telemetry(registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch) -> Iterator[Telemetry]:
    for name in ("OTEL_SDK_DISABLED", "OTEL_METRICS_EXPORTER", "OTEL_TRACES_EXPORTER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_PROMETHEUS_PORT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_PROMETHEUS_HOST", raising=False)
    handle = setup_telemetry(
        "orders-test",
        traces=False,
        prometheus_port=0,
        prometheus_registry=registry,
        set_global=False,
    )
    yield handle
    handle.shutdown()


async def dispatch_a_workload(telemetry: Telemetry) -> None:
    shop = Shop()
    mediator = build_mediator(
        shop, meter_provider=telemetry.meter_provider, uow_factory=FixedTimingUnitOfWork
    )
    await mediator.send(PlaceOrder(order_id="o-1", amount=3, sku="sku-1"))
    with pytest.raises(RuntimeError):
        await mediator.send(Explode())
    await mediator.query(GetOrder(order_id="o-1"))


async def test_the_exposition_has_the_documented_metric_and_label_names(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    await dispatch_a_workload(telemetry)

    exposed = samples(generate_latest(registry).decode())

    names = {name for name, _, _ in exposed} - {"target_info"}
    assert names == set(EXPECTED_LABELS)
    for name, labels, _ in exposed:
        if name == "target_info":
            assert labels["service_name"] == "orders-test"
            continue
        assert set(labels) - SCOPE_LABELS <= EXPECTED_LABELS[name], name
        assert labels["otel_scope_name"] == "cqrs_ddd"
    failed = [
        labels
        for name, labels, _ in exposed
        if name == "cqrs_command_duration_seconds_count" and labels["cqrs_outcome"] == "error"
    ]
    assert failed == [
        {
            "cqrs_message_type": "Explode",
            "cqrs_outcome": "error",
            "error_type": "tests.observability.app.Boom",
            **{k: v for k, v in failed[0].items() if k in SCOPE_LABELS},
        }
    ]
    events = {
        labels["cqrs_aggregate_type"]: value
        for name, labels, value in exposed
        if name == "cqrs_events_stored_total"
    }
    assert events == {"Order": 1.0, "Stock": 1.0}


async def test_histograms_use_the_seconds_buckets_and_3_ms_falls_in_le_0_005(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    await dispatch_a_workload(telemetry)

    exposed = samples(generate_latest(registry).decode())

    buckets = {
        labels["le"]: value
        for name, labels, value in exposed
        if name == "cqrs_persistence_duration_seconds_bucket"
        and labels["cqrs_aggregate_type"] == "Order"
    }
    assert list(buckets) == BUCKET_BOUNDS
    assert buckets["0.001"] == buckets["0.0025"] == 0  # not in the first buckets...
    assert buckets["0.005"] == 1  # ...but in (0.0025, 0.005]
    assert buckets["+Inf"] == 1


async def test_metrics_are_served_over_http_on_loopback(telemetry: Telemetry) -> None:
    await dispatch_a_workload(telemetry)
    assert telemetry.prometheus_address is not None
    host, port = telemetry.prometheus_address

    def fetch() -> str:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as response:
            return str(response.read().decode())

    text = await asyncio.to_thread(fetch)

    assert host == "127.0.0.1"
    assert "# TYPE cqrs_command_duration_seconds histogram" in text
    assert "# TYPE cqrs_events_stored_total counter" in text
    assert 'cqrs_persistence_duration_seconds_bucket{cqrs_aggregate_type="Order",le="0.005"' in text
