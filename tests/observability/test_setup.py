"""setup_telemetry: the OTEL_* variables, the disabled SDK, errors, globals, shutdown."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cqrs_ddd_core.exceptions import ConfigurationError
from cqrs_ddd_core.telemetry.setup import setup_telemetry
from tests.observability.app import PlaceOrder, Shop, build_mediator
from tests.observability.collector import OtlpReceiver
from tests.observability.test_otlp_export import OTEL_VARIABLES

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_otel_sdk_disabled_builds_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "TRUE")

    telemetry = setup_telemetry("orders", prometheus_port=0)

    assert telemetry.enabled is False
    assert telemetry.tracer_provider is None
    assert telemetry.meter_provider is None
    assert telemetry.prometheus_address is None
    telemetry.shutdown()


async def test_extra_exporters_and_readers_are_wired_and_shutdown_flushes_them() -> None:
    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    telemetry = setup_telemetry(
        "orders", traces=False, span_exporters=[exporter], metric_readers=[reader], set_global=False
    )
    mediator = build_mediator(
        Shop(),
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
    )

    await mediator.send(PlaceOrder(order_id="o-1", amount=3))
    data = reader.get_metrics_data()
    with telemetry:
        pass  # __exit__ shuts down; a second shutdown is harmless
    telemetry.shutdown()

    assert "command PlaceOrder" in [span.name for span in exporter.get_finished_spans()]
    # The extra reader is wired to the meter provider: it saw the command's metrics.
    assert data is not None
    names = {
        metric.name
        for resource_metrics in data.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
    }
    assert "cqrs.command.duration" in names
    resource = exporter.get_finished_spans()[0].resource
    assert resource.attributes["service.name"] == "orders"


@pytest.mark.parametrize("variable", [None, "none"])
async def test_otel_traces_exporter_none_switches_span_export_off(
    monkeypatch: pytest.MonkeyPatch, variable: str | None
) -> None:
    # The control case (variable unset) exports to the same receiver, so a
    # setup that ignored "none" would be seen sending spans.
    if variable is not None:
        monkeypatch.setenv("OTEL_TRACES_EXPORTER", variable)

    with OtlpReceiver() as receiver:
        telemetry = setup_telemetry("orders", otlp_endpoint=receiver.endpoint, set_global=False)
        mediator = build_mediator(Shop(), tracer_provider=telemetry.tracer_provider)
        await mediator.send(PlaceOrder(order_id="o-1", amount=3))
        telemetry.shutdown()  # flushes whatever would be exported

    sent = [span.name for _, span in receiver.spans()]
    if variable == "none":
        assert sent == []
    else:
        assert "command PlaceOrder" in sent
    assert telemetry.meter_provider is None  # no reader asked for


def test_otel_metrics_exporter_prometheus_serves_on_the_configured_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prometheus_client import CollectorRegistry

    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "prometheus")
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_PORT", "0")

    telemetry = setup_telemetry(
        "orders", traces=False, prometheus_registry=CollectorRegistry(), set_global=False
    )

    assert telemetry.prometheus_reader is not None
    assert telemetry.prometheus_address is not None
    assert telemetry.prometheus_address[0] == "127.0.0.1"
    telemetry.shutdown()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("OTEL_TRACES_EXPORTER", "zipkin", "Unknown OTEL_TRACES_EXPORTER value 'zipkin'"),
        ("OTEL_METRICS_EXPORTER", "statsd", "Unknown OTEL_METRICS_EXPORTER value 'statsd'"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "Unsupported OTLP protocol 'http/json'"),
        ("OTEL_EXPORTER_PROMETHEUS_PORT", "metrics", "must be a port number"),
    ],
)
def test_a_misconfiguration_raises_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(ConfigurationError, match=message):
        setup_telemetry("orders", prometheus=True, set_global=False)


def test_grpc_without_its_exporter_installed_says_what_to_install() -> None:
    if importlib.util.find_spec("opentelemetry.exporter.otlp.proto.grpc") is not None:
        pytest.skip("the gRPC exporter is installed")  # pragma: no cover

    with pytest.raises(ConfigurationError, match="opentelemetry-exporter-otlp-proto-grpc"):
        setup_telemetry("orders", otlp_protocol="grpc", set_global=False)


def test_set_global_installs_the_providers_once_per_process() -> None:
    script = textwrap.dedent(
        """
        from opentelemetry import metrics, trace
        from cqrs_ddd_core.telemetry.setup import setup_telemetry
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        first = setup_telemetry("a", traces=False, metric_readers=[InMemoryMetricReader()])
        second = setup_telemetry("b", traces=False)
        print(first.is_global, second.is_global)
        print(trace.get_tracer_provider() is first.tracer_provider)
        print(metrics.get_meter_provider() is first.meter_provider)
        first.shutdown()
        second.shutdown()
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
    )
    lines = [line for line in done.stdout.splitlines() if "telemetry_global" not in line]
    assert lines == ["True False", "True", "True"]
    assert "telemetry_global_provider_already_set" in done.stdout


def test_a_taken_prometheus_port_raises_and_leaves_nothing_registered() -> None:
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    first = setup_telemetry(
        "orders", traces=False, prometheus_port=0, prometheus_registry=registry, set_global=False
    )
    assert first.prometheus_address is not None
    taken = first.prometheus_address[1]
    collectors_before = len(registry._collector_to_names)

    with pytest.raises(OSError):
        setup_telemetry(
            "orders",
            traces=False,
            prometheus_port=taken,
            prometheus_registry=registry,
            set_global=False,
        )

    assert len(registry._collector_to_names) == collectors_before
    first.shutdown()


@pytest.mark.parametrize(
    ("kwargs", "variable", "exemplars"),
    [
        ({"prometheus": True}, None, False),  # the Prometheus exporter drops exemplars
        ({"prometheus": True}, "trace_based", True),  # the variable wins
        ({"prometheus": True, "otlp_metrics": True}, None, True),  # OTLP sends them
        ({"metric_readers": [InMemoryMetricReader()]}, None, True),  # a reader of yours
        ({"prometheus": True, "prometheus_exemplars": True}, None, True),  # served (OpenMetrics)
    ],
)
def test_exemplars_are_built_only_where_something_can_export_them(
    monkeypatch: pytest.MonkeyPatch,
    kwargs: dict[str, object],
    variable: str | None,
    exemplars: bool,
) -> None:
    from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter
    from prometheus_client import CollectorRegistry

    monkeypatch.delenv("OTEL_METRICS_EXEMPLAR_FILTER", raising=False)
    if variable is not None:
        monkeypatch.setenv("OTEL_METRICS_EXEMPLAR_FILTER", variable)

    telemetry = setup_telemetry(
        "orders",
        traces=False,
        prometheus_registry=CollectorRegistry(),
        set_global=False,
        **kwargs,  # type: ignore[arg-type]
    )

    assert telemetry.meter_provider is not None
    exemplar_filter = telemetry.meter_provider._sdk_config.exemplar_filter
    assert isinstance(exemplar_filter, AlwaysOffExemplarFilter) is not exemplars
    telemetry.shutdown()
