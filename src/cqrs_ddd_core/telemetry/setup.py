"""Wire the OpenTelemetry SDK for an application: OTLP traces, Prometheus and/or OTLP metrics.

This is the only module of the library that imports the SDK and the
exporters (``pip install "cqrs-ddd-advanced-core[otel]"``); import it
explicitly, once, at application start::

    from cqrs_ddd_core.telemetry.setup import setup_telemetry

    telemetry = setup_telemetry("orders", prometheus_port=9464)
    ...
    telemetry.shutdown()  # flushes pending spans and metrics

Arguments are defaults; the standard ``OTEL_*`` environment variables, when
set, win, so operators can retarget a deployed service without a code change:

======================================  ==========================================
variable                                effect
======================================  ==========================================
``OTEL_SDK_DISABLED=true``              nothing is built; the API stays a no-op
``OTEL_SERVICE_NAME``                   ``service.name`` (over ``service_name``)
``OTEL_RESOURCE_ATTRIBUTES``            resource attributes (over ``resource_attributes``)
``OTEL_TRACES_EXPORTER``                ``otlp`` / ``console`` / ``none`` (over ``traces``)
``OTEL_METRICS_EXPORTER``               ``prometheus`` / ``otlp`` / ``console`` / ``none``
``OTEL_EXPORTER_OTLP_ENDPOINT``         base URL, ``/v1/<signal>`` appended (over ``otlp_endpoint``)
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``  full URL of the traces endpoint
``OTEL_EXPORTER_OTLP_PROTOCOL``         ``http/protobuf`` (default) or ``grpc`` (needs
                                        ``opentelemetry-exporter-otlp-proto-grpc``)
``OTEL_EXPORTER_OTLP_HEADERS``          headers of export requests (over ``otlp_headers``)
``OTEL_EXPORTER_PROMETHEUS_HOST/PORT``  where ``/metrics`` is served
``OTEL_TRACES_SAMPLER`` / ``_ARG``      the sampler (read by the SDK)
``OTEL_METRIC_EXPORT_INTERVAL``         OTLP metric export interval in ms (read by the SDK)
======================================  ==========================================

An OTLP collector that does not answer costs a short probe (0.25 s at most,
repeated every 5 s at most) and one ``telemetry_collector_unreachable``
warning, never the exporters' retries (see :mod:`.otlp_gate`).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from opentelemetry import metrics, trace

from cqrs_ddd_core.exceptions import ConfigurationError
from cqrs_ddd_core.extras import MissingExtraError, translated
from cqrs_ddd_core.telemetry.otlp_gate import gate_for, gated, otlp_endpoint

# Without the [otel] extra: one error naming it, not a bare ModuleNotFoundError.
with translated("setup_telemetry"):
    from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, ExemplarFilter, MeterProvider
    from opentelemetry.sdk.metrics.export import (
        ConsoleMetricExporter,
        MetricExporter,
        MetricExportResult,
        MetricReader,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
        SpanExportResult,
    )

__all__ = ["Telemetry", "setup_telemetry"]

_log = structlog.get_logger("cqrs_ddd_core.telemetry")

_HTTP = "http/protobuf"
_GRPC = "grpc"
_DEFAULT_PROMETHEUS_PORT = 9464


class Telemetry:
    """What :func:`setup_telemetry` built; :meth:`shutdown` flushes and stops all of it.

    Attributes:
        enabled: False when ``OTEL_SDK_DISABLED`` switched everything off.
        tracer_provider: The SDK tracer provider (None when disabled).
        meter_provider: The SDK meter provider (None when disabled or no reader).
        prometheus_reader: The Prometheus reader, when Prometheus was asked for.
        prometheus_address: ``(host, port)`` of the ``/metrics`` server started, if any.
        is_global: Whether the providers were installed as the global ones.
    """

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        prometheus_reader: MetricReader | None = None,
        prometheus_server: Any = None,
        is_global: bool = False,
    ) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.prometheus_reader = prometheus_reader
        self._server = prometheus_server
        self.prometheus_address: tuple[str, int] | None = (
            None if prometheus_server is None else prometheus_server.server_address[:2]
        )
        self.is_global = is_global
        self._closed = False

    @property
    def enabled(self) -> bool:
        return self.tracer_provider is not None or self.meter_provider is not None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export what is pending now; True when everything was exported in time."""
        done = True
        if self.tracer_provider is not None:
            done = self.tracer_provider.force_flush(timeout_millis) and done
        if self.meter_provider is not None:
            done = self.meter_provider.force_flush(timeout_millis) and done
        return done

    def shutdown(self) -> None:
        """Flush pending spans and metrics, stop exporters and the ``/metrics`` server.

        Idempotent. Instruments keep working afterwards as no-ops.
        """
        if self._closed:
            return
        self._closed = True
        try:
            if self.tracer_provider is not None:
                self.tracer_provider.shutdown()  # BatchSpanProcessor flushes first
            if self.meter_provider is not None:
                self.meter_provider.shutdown()  # periodic readers export a last time
        finally:
            if self._server is not None:
                self._server.shutdown()
                self._server.server_close()

    def __enter__(self) -> Telemetry:
        return self

    def __exit__(self, *_: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return (
            f"Telemetry(enabled={self.enabled}, global={self.is_global}, "
            f"prometheus={self.prometheus_address})"
        )


def setup_telemetry(
    service_name: str | None = None,
    *,
    resource_attributes: Mapping[str, str] | None = None,
    traces: bool = True,
    otlp_endpoint: str | None = None,
    otlp_protocol: str | None = None,
    otlp_headers: Mapping[str, str] | None = None,
    otlp_metrics: bool = False,
    prometheus: bool = False,
    prometheus_port: int | None = None,
    prometheus_host: str = "127.0.0.1",
    prometheus_registry: Any = None,
    prometheus_exemplars: bool = False,
    span_exporters: Sequence[SpanExporter] = (),
    metric_readers: Sequence[MetricReader] = (),
    set_global: bool = True,
) -> Telemetry:
    """Build the SDK: tracer provider with OTLP export, meter provider with Prometheus/OTLP.

    Args:
        service_name: ``service.name`` unless ``OTEL_SERVICE_NAME`` (or
            ``service.name`` in ``OTEL_RESOURCE_ATTRIBUTES``) says otherwise.
        resource_attributes: More resource attributes (``deployment.environment``...).
        traces: Export spans over OTLP (unless ``OTEL_TRACES_EXPORTER`` says otherwise).
        otlp_endpoint: Collector base URL (``http://collector:4318``; for gRPC
            ``http://collector:4317``); default ``http://localhost:4318``.
        otlp_protocol: ``"http/protobuf"`` (default) or ``"grpc"``.
        otlp_headers: Headers for export requests (authentication...).
        otlp_metrics: Also push metrics over OTLP (periodically).
        prometheus: Attach a Prometheus reader to ``prometheus_registry``
            (default: ``prometheus_client``'s global registry), to serve it yourself.
        prometheus_port: Attach a Prometheus reader and serve ``/metrics`` on
            ``prometheus_host:prometheus_port`` (0 picks a free port; see
            :attr:`Telemetry.prometheus_address`).
        prometheus_host: Interface to serve on; loopback by default.
        prometheus_registry: A ``prometheus_client.CollectorRegistry`` to use
            instead of the global one.
        prometheus_exemplars: Serve each histogram bucket's exemplar (the trace
            and span of a measurement) in the OpenMetrics exposition, for
            Grafana's links from latency panels to traces (see
            :mod:`.openmetrics`); worth it when traces are exported.
        span_exporters: More span exporters (each behind a BatchSpanProcessor).
        metric_readers: More metric readers.
        set_global: Install the providers as OpenTelemetry's global ones (the
            library's middlewares use those unless given providers). The API
            allows this once per process; a second attempt is logged and
            leaves ``is_global`` False.

    Raises:
        ConfigurationError: an unknown exporter or protocol was asked for, or
            the gRPC exporter is asked for but not installed.
    """
    if _env("OTEL_SDK_DISABLED", "").lower() == "true":
        return Telemetry()

    # Decide and check everything first, so a misconfiguration raises before
    # any thread, socket or registry entry exists.
    trace_exporters = _exporters("OTEL_TRACES_EXPORTER", ("otlp",) if traces else ())
    defaults: list[str] = []
    if prometheus or prometheus_port is not None:
        defaults.append("prometheus")
    if otlp_metrics:
        defaults.append("otlp")
    metric_exporters = _exporters("OTEL_METRICS_EXPORTER", tuple(defaults))
    for variable, names, known in (
        ("OTEL_TRACES_EXPORTER", trace_exporters, {"otlp", "console"}),
        ("OTEL_METRICS_EXPORTER", metric_exporters, {"otlp", "console", "prometheus"}),
    ):
        for name in names:
            if name not in known:
                raise ConfigurationError(f"Unknown {variable} value {name!r}")
    span_exporter_cls: Any = None
    metric_exporter_cls: Any = None
    traces_protocol = metrics_protocol = _HTTP
    if "otlp" in trace_exporters:
        traces_protocol = _protocol("traces", otlp_protocol)
        span_exporter_cls = _import_exporter(traces_protocol, "trace", "OTLPSpanExporter")
    if "otlp" in metric_exporters:
        metrics_protocol = _protocol("metrics", otlp_protocol)
        metric_exporter_cls = _import_exporter(metrics_protocol, "metric", "OTLPMetricExporter")
    port = _env_int("OTEL_EXPORTER_PROMETHEUS_PORT", prometheus_port, "prometheus" in defaults)
    host = _env("OTEL_EXPORTER_PROMETHEUS_HOST", prometheus_host)

    resource = _resource(service_name, resource_attributes)
    tracer_provider = TracerProvider(resource=resource)
    for name in trace_exporters:
        span_exporter: SpanExporter
        if name == "otlp":
            kwargs = _endpoint_kwargs("traces", traces_protocol, otlp_endpoint, otlp_headers)
            span_exporter = _gated(
                span_exporter_cls, "traces", traces_protocol, kwargs, SpanExportResult.FAILURE
            )(**kwargs)
        else:
            span_exporter = ConsoleSpanExporter()
        tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
    for exporter in span_exporters:
        tracer_provider.add_span_processor(BatchSpanProcessor(exporter))

    readers: list[MetricReader] = list(metric_readers)
    prometheus_reader: MetricReader | None = None
    server: Any = None
    try:
        for name in metric_exporters:
            if name == "prometheus":
                prometheus_reader, server = _prometheus(
                    prometheus_registry, port, host, prometheus_exemplars
                )
                readers.append(prometheus_reader)
            elif name == "otlp":
                kwargs = _endpoint_kwargs("metrics", metrics_protocol, otlp_endpoint, otlp_headers)
                metric_exporter: MetricExporter = _gated(
                    metric_exporter_cls,
                    "metrics",
                    metrics_protocol,
                    kwargs,
                    MetricExportResult.FAILURE,
                )(**kwargs)
                readers.append(PeriodicExportingMetricReader(metric_exporter))
            else:
                readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
    except BaseException:  # e.g. the Prometheus port is taken: undo what was built
        tracer_provider.shutdown()
        for reader in readers[len(metric_readers) :]:
            reader.shutdown()
        raise
    meter_provider = (
        MeterProvider(
            resource=resource,
            metric_readers=readers,
            exemplar_filter=(
                None if prometheus_exemplars else _exemplar_filter(metric_exporters, metric_readers)
            ),
        )
        if readers
        else None
    )

    is_global = False
    if set_global:
        is_global = _install_globals(tracer_provider, meter_provider)
    return Telemetry(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        prometheus_reader=prometheus_reader,
        prometheus_server=server,
        is_global=is_global,
    )


# -- helpers -------------------------------------------------------------------


def _exemplar_filter(
    metric_exporters: Sequence[str], metric_readers: Sequence[MetricReader]
) -> ExemplarFilter | None:
    """No exemplars when nothing could export them; else the SDK's choice.

    An exemplar ties a measurement to the span current when it was taken
    (``OTEL_METRICS_EXEMPLAR_FILTER``, default ``trace_based``); the SDK builds
    one per measurement made in a sampled span, several microseconds each, and
    the Prometheus exporter drops them all. So when every reader is one of our
    Prometheus readers and the variable is unset, none are built.
    """
    if (
        metric_readers
        or not metric_exporters
        or any(name != "prometheus" for name in metric_exporters)
        or os.environ.get("OTEL_METRICS_EXEMPLAR_FILTER")
    ):
        return None
    return AlwaysOffExemplarFilter()


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def _env_int(name: str, default: int | None, explicit: bool) -> int | None:
    raw = os.environ.get(name, "").strip()
    if raw:
        try:
            return int(raw)
        except ValueError as exc:
            raise ConfigurationError(f"{name} must be a port number, got {raw!r}") from exc
    if default is not None or explicit:
        return default
    return _DEFAULT_PROMETHEUS_PORT  # asked for through OTEL_METRICS_EXPORTER only


def _exporters(variable: str, defaults: tuple[str, ...]) -> tuple[str, ...]:
    raw = os.environ.get(variable, "").strip()
    if not raw:
        return defaults
    names = tuple(part.strip().lower() for part in raw.split(",") if part.strip())
    return () if "none" in names else names


def _resource(service_name: str | None, attributes: Mapping[str, str] | None) -> Resource:
    given: dict[str, str] = dict(attributes or {})
    if service_name:
        given["service.name"] = service_name
    # Resource.create lets code override the environment; we want the reverse,
    # so the environment's attributes are merged on top again.
    return Resource.create(given).merge(OTELResourceDetector().detect())


def _protocol(signal: str, given: str | None) -> str:
    protocol = _env(
        f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL",
        _env("OTEL_EXPORTER_OTLP_PROTOCOL", given or _HTTP),
    )
    if protocol not in (_HTTP, _GRPC):
        raise ConfigurationError(
            f"Unsupported OTLP protocol {protocol!r}: use {_HTTP!r} or {_GRPC!r}"
        )
    return protocol


def _endpoint_kwargs(
    signal: str, protocol: str, endpoint: str | None, headers: Mapping[str, str] | None
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    env_endpoint = os.environ.get(
        f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT"
    ) or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if endpoint and not env_endpoint:  # else the exporter reads the variables itself
        base = endpoint.rstrip("/")
        kwargs["endpoint"] = base if protocol == _GRPC else f"{base}/v1/{signal}"
    if headers and not os.environ.get("OTEL_EXPORTER_OTLP_HEADERS"):
        kwargs["headers"] = dict(headers)
    return kwargs


def _gated(cls: Any, signal: str, protocol: str, kwargs: dict[str, Any], failure: Any) -> Any:
    """``cls`` behind its collector's gate (see :mod:`.otlp_gate`): an absent
    collector costs a bounded probe and one warning line, not retries."""
    gate = gate_for(otlp_endpoint(signal, protocol, kwargs.get("endpoint")))
    return cls if gate is None else gated(cls, failure, gate)


def _import_exporter(protocol: str, signal: str, class_name: str) -> Any:
    package = "grpc" if protocol == _GRPC else "http"
    module = f"opentelemetry.exporter.otlp.proto.{package}.{signal}_exporter"
    try:
        return getattr(importlib.import_module(module), class_name)
    except ImportError as exc:
        if package == "http":  # part of the [otel] extra
            raise MissingExtraError(module, feature=f"OTLP over {protocol}") from exc
        raise ConfigurationError(
            f"OTLP over {protocol} needs opentelemetry-exporter-otlp-proto-{package} "
            f"(pip install opentelemetry-exporter-otlp-proto-{package})"
        ) from exc


def _prometheus(
    registry: Any, port: int | None, host: str, exemplars: bool
) -> tuple[MetricReader, Any]:
    try:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
    except ImportError as exc:  # pragma: no cover - part of the [otel] extra
        raise ConfigurationError(
            "Prometheus metrics need opentelemetry-exporter-prometheus "
            '(pip install "cqrs-ddd-advanced-core[otel]")'
        ) from exc
    reader: MetricReader
    if exemplars:
        from cqrs_ddd_core.telemetry.openmetrics import ExemplarPrometheusReader

        reader = ExemplarPrometheusReader(registry)
    else:
        kwargs: dict[str, Any] = {} if registry is None else {"registry": registry}
        reader = PrometheusMetricReader(**kwargs)
    server: Any = None
    if port is not None:
        from prometheus_client import REGISTRY, start_http_server

        try:
            started = start_http_server(port, addr=host, registry=registry or REGISTRY)
        except BaseException:  # the port is taken...: unregister the reader's collector
            reader.shutdown()
            raise
        # prometheus_client >= 0.20 returns (server, thread); older ones nothing.
        server = started[0] if isinstance(started, tuple) else None
    return reader, server


def _install_globals(tracer_provider: TracerProvider, meter_provider: MeterProvider | None) -> bool:
    trace.set_tracer_provider(tracer_provider)
    installed = trace.get_tracer_provider() is tracer_provider
    if meter_provider is not None:
        metrics.set_meter_provider(meter_provider)
        installed = installed and metrics.get_meter_provider() is meter_provider
    if not installed:
        _log.warning(
            "telemetry_global_provider_already_set",
            hint="the OpenTelemetry API allows one global provider per process; pass "
            "tracer_provider=/meter_provider= to the middlewares instead",
        )
    return installed
