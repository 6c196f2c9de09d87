"""The demo's telemetry and logging: what an application wires, done for the CLI.

* Metrics: ``--metrics-port`` serves ``/metrics`` on 127.0.0.1 through
  :func:`~cqrs_ddd_core.telemetry.setup.setup_telemetry` (the OpenTelemetry SDK
  with a Prometheus reader). With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, spans
  and metrics are also pushed to that collector over OTLP; with only
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (or ``..._METRICS_ENDPOINT``) only
  that signal is; the other ``OTEL_*`` variables work as ``setup_telemetry``
  documents. A collector that does not answer costs one warning line.
* A **tap** sits between the library's meter and the SDK: every value the
  metrics middleware records in ``cqrs.command.duration`` and
  ``cqrs.query.duration`` also reaches the run's statistics. The summary's
  command latencies are therefore the very durations Prometheus receives.
  The library's observable counters (``cqrs.events.stored``,
  ``cqrs.outbox.enqueued``: registered once per process on the global
  provider) are registered again on each run's provider, counting from the
  run's start, so each run reports its own commits as a fresh provider would.
* Logging: structlog to stderr at ``--log-level``. The workload's expected
  failures (conflicts, commands the domain refuses, cancellations on Ctrl-C)
  are counted in the summary; the demo logs them at INFO, not WARNING/ERROR.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

import structlog
from opentelemetry import metrics, trace
from opentelemetry.metrics import (
    CallbackOptions,
    Meter,
    MeterProvider,
    NoOpMeterProvider,
    Observation,
)

from cqrs_ddd_core.context import current_context
from cqrs_ddd_core.telemetry.logs import add_trace_context
from cqrs_ddd_core.telemetry.names import (
    ATTR_MESSAGE_TYPE,
    METRIC_COMMAND_DURATION,
    METRIC_QUERY_DURATION,
    SCOPE_NAME,
)
from cqrs_ddd_core.version import __version__

if TYPE_CHECKING:
    from structlog.typing import EventDict, WrappedLogger

    from cqrs_ddd_core.telemetry.setup import Telemetry

__all__ = ["DemoTelemetry", "DispatchSink", "configure_logging", "install_tap", "start_telemetry"]

SERVICE_NAME = "cqrs-ddd-demo"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

DispatchSink = Callable[..., None]
"""``sink(kind, message_type, seconds, nested=bool)``; see ``RunStats.record_dispatch``."""

_DURATIONS = {METRIC_COMMAND_DURATION: "command", METRIC_QUERY_DURATION: "query"}


# -- the tap ----------------------------------------------------------------------------


class _TapHistogram:
    __slots__ = ("_inner", "_kind", "_tap")

    def __init__(self, inner: Any, kind: str, tap: DispatchTap) -> None:
        self._inner, self._kind, self._tap = inner, kind, tap

    def record(self, amount: float, attributes: Any = None, context: Any = None) -> None:
        self._inner.record(amount, attributes, context)
        sink = self._tap.sink
        if sink is not None and attributes:
            dispatch = current_context()  # the dispatch being measured
            nested = dispatch is not None and dispatch.parent is not None
            sink(self._kind, attributes.get(ATTR_MESSAGE_TYPE, "?"), amount, nested=nested)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _TapMeter:
    __slots__ = ("_meter", "_tap")

    def __init__(self, meter: Meter, tap: DispatchTap) -> None:
        self._meter, self._tap = meter, tap

    def create_histogram(self, name: str, *args: Any, **kwargs: Any) -> Any:
        histogram = self._meter.create_histogram(name, *args, **kwargs)
        kind = _DURATIONS.get(name)
        return histogram if kind is None else _TapHistogram(histogram, kind, self._tap)

    def create_observable_counter(
        self,
        name: str,
        callbacks: Sequence[Callable[[CallbackOptions], Iterable[Observation]]] | None = None,
        unit: str = "",
        description: str = "",
    ) -> Any:
        observable = _RunObservable(name, tuple(callbacks or ()), unit, description)
        return self._tap._observe(observable)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._meter, name)


class _RunObservable:
    """An observable counter of the library's scope, reported to one run's provider at a time
    as the increase since that run's provider was set."""

    __slots__ = ("callbacks", "description", "name", "unit")

    def __init__(
        self,
        name: str,
        callbacks: tuple[Callable[[CallbackOptions], Iterable[Observation]], ...],
        unit: str,
        description: str,
    ) -> None:
        self.name, self.callbacks, self.unit, self.description = name, callbacks, unit, description

    def _observe(self) -> list[Observation]:
        options = CallbackOptions()
        return [found for callback in self.callbacks for found in callback(options)]

    def register(self, meter: Meter) -> Any:
        def key(observation: Observation) -> frozenset[tuple[str, Any]]:
            return frozenset((observation.attributes or {}).items())

        start = {key(observation): observation.value for observation in self._observe()}

        def since_start(_options: CallbackOptions) -> list[Observation]:
            return [
                Observation(
                    observation.value - start.get(key(observation), 0), observation.attributes
                )
                for observation in self._observe()
            ]

        return meter.create_observable_counter(
            self.name, callbacks=[since_start], unit=self.unit, description=self.description
        )


class DispatchTap(MeterProvider):
    """The global meter provider of the demo process: the run's provider, plus a sink.

    Installed once per process (OpenTelemetry allows one global provider);
    each run points it at its own provider (``inner``) and statistics (``sink``).
    Meters of other scopes are the inner provider's, untouched.
    """

    def __init__(self) -> None:
        self._inner: MeterProvider = NoOpMeterProvider()
        self._observables: list[_RunObservable] = []
        self.sink: DispatchSink | None = None

    @property
    def inner(self) -> MeterProvider:
        """This run's provider; setting it registers the library's observable counters there."""
        return self._inner

    @inner.setter
    def inner(self, provider: MeterProvider) -> None:
        self._inner = provider
        if self._observables:
            meter = provider.get_meter(SCOPE_NAME, __version__)
            for observable in self._observables:
                observable.register(meter)

    def _observe(self, observable: _RunObservable) -> Any:
        self._observables.append(observable)
        return observable.register(self._inner.get_meter(SCOPE_NAME, __version__))

    def get_meter(
        self,
        name: str,
        version: str | None = None,
        schema_url: str | None = None,
        attributes: Any = None,
    ) -> Meter:
        meter = self.inner.get_meter(name, version, schema_url, attributes)
        if name != SCOPE_NAME:
            return meter
        return cast(Meter, _TapMeter(meter, self))


_TAP: DispatchTap | None = None


def install_tap() -> DispatchTap | None:
    """The process's tap, installed as the global meter provider on first use.

    ``None`` when another global meter provider was installed first (the
    caller then measures dispatch durations itself).
    """
    global _TAP
    if _TAP is None:
        tap = DispatchTap()
        metrics.set_meter_provider(tap)
        if metrics.get_meter_provider() is not tap:
            return None
        _TAP = tap
    return _TAP


# -- the SDK ------------------------------------------------------------------------------


def _env_set(*names: str) -> bool:
    return any(os.environ.get(name, "").strip() for name in names)


class DemoTelemetry:
    """What :func:`start_telemetry` set up; :meth:`shutdown` flushes and stops it."""

    def __init__(self, telemetry: Telemetry | None, tap: DispatchTap | None) -> None:
        self._telemetry = telemetry
        self.tap = tap
        self.metrics_address: tuple[str, int] | None = (
            None if telemetry is None else telemetry.prometheus_address
        )
        self.traces_exported = False

    def shutdown(self) -> None:
        if self.tap is not None:
            self.tap.sink = None
            self.tap.inner = NoOpMeterProvider()
        if self._telemetry is not None:
            self._telemetry.shutdown()


def start_telemetry(metrics_port: int | None) -> DemoTelemetry:
    """Install the tap, and the SDK when metrics are served or a collector is configured.

    Raises:
        ConfigurationError: an ``OTEL_*`` variable asks for something unknown.
        OSError: the metrics port cannot be bound.
    """
    tap = install_tap()
    # Per signal, as the OpenTelemetry environment specification reads them: a
    # signal's own endpoint configures that signal only; the generic one all.
    otlp_traces = _env_set("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    otlp_metrics = _env_set("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
    wanted = (
        metrics_port is not None
        or otlp_traces
        or otlp_metrics
        or _env_set("OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER")
    )
    if not wanted:
        return DemoTelemetry(None, tap)
    from prometheus_client import CollectorRegistry

    from cqrs_ddd_core.telemetry.setup import setup_telemetry

    telemetry = setup_telemetry(
        SERVICE_NAME,
        traces=otlp_traces,
        otlp_metrics=otlp_metrics,
        prometheus_port=metrics_port,
        prometheus_registry=CollectorRegistry(),  # this run's metrics only
        # Exemplars link latency panels to traces: only when traces are exported.
        prometheus_exemplars=otlp_traces,
        set_global=False,
    )
    demo = DemoTelemetry(telemetry, tap)
    if tap is not None and telemetry.meter_provider is not None:
        tap.inner = telemetry.meter_provider
    exporting = otlp_traces or _env_set("OTEL_TRACES_EXPORTER")
    if exporting and telemetry.tracer_provider is not None:
        trace.set_tracer_provider(telemetry.tracer_provider)
        demo.traces_exported = trace.get_tracer_provider() is telemetry.tracer_provider
    return demo


# -- logging ------------------------------------------------------------------------------


class _StderrLogger:
    """Writes each line to the ``sys.stderr`` of the moment (the progress display
    redirects it while it runs, so log lines appear above the bar)."""

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


def _stderr_logger(*_args: Any) -> _StderrLogger:
    return _StderrLogger()


def _expected_failures(
    threshold: int, error_types: Collection[str]
) -> Callable[[WrappedLogger, str, EventDict], EventDict]:
    def demote(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        if event_dict.get("error_type") in error_types and str(
            event_dict.get("event", "")
        ).endswith("_failed"):
            if threshold > logging.INFO:
                raise structlog.DropEvent
            event_dict.pop("exc_info", None)
            event_dict["level"] = "info"
        return event_dict

    return demote


def configure_logging(level: str, expected_error_types: Collection[str] = ()) -> None:
    """structlog to stderr at ``level``; ``expected_error_types`` (``error.type``
    values) of failed dispatches are logged at INFO without a traceback."""
    threshold = logging.getLevelName(level.upper())
    if not isinstance(threshold, int):
        raise ValueError(f"unknown log level {level!r}")
    colors = sys.stderr.isatty() and "NO_COLOR" not in os.environ
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_trace_context,
            structlog.processors.add_log_level,
            _expected_failures(threshold, frozenset(expected_error_types)),
            structlog.processors.TimeStamper(fmt="%H:%M:%S.%f", utc=False),
            structlog.dev.ConsoleRenderer(
                colors=colors, exception_formatter=structlog.dev.plain_traceback
            ),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(threshold, logging.WARNING), stream=sys.stderr)
