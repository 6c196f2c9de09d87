"""Export over the wire: the real OTLP/HTTP exporters from setup_telemetry, to a local receiver."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan

from cqrs_ddd_core.telemetry.setup import setup_telemetry
from cqrs_ddd_core.version import __version__
from tests.observability.app import PlaceOrder, Shop, build_mediator
from tests.observability.collector import OtlpReceiver, attributes

OTEL_VARIABLES = (
    "OTEL_SDK_DISABLED",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_EXPORTER",
    "OTEL_METRICS_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_PROMETHEUS_PORT",
    "OTEL_EXPORTER_PROMETHEUS_HOST",
    "OTEL_TRACES_SAMPLER",
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


async def test_spans_reach_the_collector_with_names_attributes_parents_and_service_name(
    receiver: OtlpReceiver,
) -> None:
    telemetry = setup_telemetry(
        "orders-test",
        resource_attributes={"deployment.environment": "test"},
        otlp_endpoint=receiver.endpoint,
        set_global=False,
    )
    shop = Shop()
    mediator = build_mediator(shop, tracer_provider=telemetry.tracer_provider)
    command = PlaceOrder(order_id="o-1", amount=3, sku="sku-1")

    response = await mediator.send(command)
    telemetry.shutdown()  # flushes the batch processor

    assert receiver.content_types
    assert set(receiver.content_types) == {"application/x-protobuf"}
    received = list(receiver.spans())
    resources = {tuple(sorted(r.items())) for r, _ in received}
    assert len(resources) == 1
    resource = dict(next(iter(resources)))
    assert resource["service.name"] == "orders-test"
    assert resource["deployment.environment"] == "test"
    assert resource["telemetry.sdk.language"] == "python"
    spans = {span.name: span for _, span in received}
    assert sorted(spans) == [
        "COMMIT",
        "INSERT events",
        "INSERT outbox",
        "command PlaceOrder",
        "command ReserveStock",
    ]
    root = spans["command PlaceOrder"]
    assert root.parent_span_id == b""
    assert root.kind == ProtoSpan.SPAN_KIND_INTERNAL
    assert attributes(root.attributes) == {
        "cqrs.message.kind": "command",
        "cqrs.message.type": "PlaceOrder",
        "cqrs.message.id": command.message_id,
        "cqrs.correlation_id": response.correlation_id,
    }
    for name in ("command ReserveStock", "INSERT events", "INSERT outbox", "COMMIT"):
        assert spans[name].parent_span_id == root.span_id, name
        assert spans[name].trace_id == root.trace_id
    assert spans["COMMIT"].kind == ProtoSpan.SPAN_KIND_CLIENT
    assert attributes(spans["INSERT events"].attributes) == {
        "db.system.name": "memory",
        "db.operation.name": "INSERT",
        "db.collection.name": "events",
        "db.query.summary": "INSERT events",
        "cqrs.db.rows": 2,
    }
    assert attributes(spans["command ReserveStock"].attributes)["cqrs.causation_id"] == (
        command.message_id
    )
    scopes = {
        (scope_spans.scope.name, scope_spans.scope.version)
        for request in receiver.traces
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
    }
    assert scopes == {("cqrs_ddd", __version__)}


async def test_metrics_reach_the_collector_over_otlp_with_seconds_buckets(
    receiver: OtlpReceiver,
) -> None:
    telemetry = setup_telemetry(
        "orders-test",
        traces=False,
        otlp_metrics=True,
        otlp_endpoint=receiver.endpoint,
        set_global=False,
    )
    assert telemetry.tracer_provider is not None  # built, exporting nowhere
    mediator = build_mediator(Shop(), meter_provider=telemetry.meter_provider)

    await mediator.send(PlaceOrder(order_id="o-1", amount=3))
    telemetry.shutdown()  # the periodic reader exports a last time

    assert receiver.traces == []
    metrics = {
        metric.name: metric
        for request in receiver.metrics
        for resource_metrics in request.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
    }
    assert {
        "cqrs.command.duration",
        "cqrs.persistence.duration",
        "cqrs.events.stored",
    } <= set(metrics)
    duration = metrics["cqrs.command.duration"]
    assert duration.unit == "s"
    (point,) = duration.histogram.data_points
    assert attributes(point.attributes) == {
        "cqrs.message.type": "PlaceOrder",
        "cqrs.outcome": "success",
    }
    assert list(point.explicit_bounds) == [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ]  # fmt: skip
    (events,) = metrics["cqrs.events.stored"].sum.data_points
    assert attributes(events.attributes) == {"cqrs.aggregate.type": "Order"}
    assert events.as_int == 1
    resource = attributes(receiver.metrics[0].resource_metrics[0].resource.attributes)
    assert resource["service.name"] == "orders-test"


async def test_the_environment_picks_the_endpoint_and_the_service_name(
    receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "orders-canary")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging,team=shop")
    telemetry = setup_telemetry(
        "orders",
        resource_attributes={"deployment.environment": "dev"},
        otlp_endpoint="http://127.0.0.1:9",  # the variable wins
        set_global=False,
    )
    mediator = build_mediator(Shop(), tracer_provider=telemetry.tracer_provider)

    await mediator.send(PlaceOrder(order_id="o-1", amount=3))
    telemetry.shutdown()

    resource, _ = next(receiver.spans())
    assert resource["service.name"] == "orders-canary"
    assert resource["deployment.environment"] == "staging"
    assert resource["team"] == "shop"
