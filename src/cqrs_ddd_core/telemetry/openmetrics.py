"""A Prometheus reader whose histograms carry exemplars (OpenMetrics), for Grafana's trace links.

The OpenTelemetry Prometheus exporter serves the metrics under the names the
dashboards use, but drops the exemplars the SDK keeps (a measurement made in
a sampled span remembers that span's trace and span ids). This reader is
that exporter, whose exposition is passed through once more: each bucket of
a histogram gets the exemplar the SDK kept for that bucket, as
``{trace_id="...", span_id="..."}``. Prometheus asks for OpenMetrics when it
scrapes (the only format that carries exemplars) and, started with
``--enable-feature=exemplar-storage``, stores them; Grafana shows them on
latency panels (``exemplar: true``) and links each to its trace in Jaeger
(the data source's ``exemplarTraceIdDestinations``).

Built by :func:`~cqrs_ddd_core.telemetry.setup.setup_telemetry` with
``prometheus_exemplars=True``. Exemplars cost a few microseconds per
measurement in a sampled span, so they are only worth it when the traces are
exported too.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics.export import Histogram, MetricsData
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.samples import Exemplar

__all__ = ["ExemplarPrometheusReader"]

_NOT_A_LABEL = re.compile(r"[^a-zA-Z0-9_]")
_Key = tuple[str, frozenset[tuple[str, str]], float]  # metric prefix, labels, bucket bound


def _sanitize(name: str) -> str:
    return _NOT_A_LABEL.sub("_", name)


class ExemplarPrometheusReader(PrometheusMetricReader):
    """``PrometheusMetricReader`` serving each histogram bucket's latest exemplar.

    Args:
        registry: The ``prometheus_client`` registry to serve from (default:
            its global one).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # The exporter writes into a registry of its own; what is served is
        # that exposition with the exemplars added.
        self._cqrs_inner = CollectorRegistry()
        self._cqrs_exemplars: dict[_Key, Exemplar] = {}
        self._cqrs_lock = threading.Lock()
        super().__init__(registry=self._cqrs_inner)
        self._cqrs_served = registry if registry is not None else REGISTRY
        self._cqrs_collector = _WithExemplars(self)
        self._cqrs_served.register(self._cqrs_collector)

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        # The MetricReader hook every reader implements; the exporter's own runs after.
        if metrics_data is not None:
            found = _exemplars_of(metrics_data)
            with self._cqrs_lock:
                self._cqrs_exemplars = found
        super()._receive_metrics(metrics_data, timeout_millis, **kwargs)

    def families(self) -> list[Any]:
        """The exporter's metric families with the exemplars put on their buckets."""
        families = list(self._cqrs_inner.collect())  # runs a collection: fresh exemplars
        with self._cqrs_lock:
            exemplars = self._cqrs_exemplars
        if exemplars:
            for family in families:
                if family.type == "histogram":
                    family.samples = [_annotate(family.name, s, exemplars) for s in family.samples]
        return families

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._cqrs_served.unregister(self._cqrs_collector)
        super().shutdown(timeout_millis, **kwargs)


class _WithExemplars:
    """The ``prometheus_client`` collector registered where the metrics are served."""

    def __init__(self, reader: ExemplarPrometheusReader) -> None:
        self._reader = reader

    def describe(self) -> list[Any]:
        return []  # nothing to collect before the reader joins a meter provider

    def collect(self) -> Iterator[Any]:
        yield from self._reader.families()


def _labels(attributes: Mapping[str, Any] | None) -> frozenset[tuple[str, str]]:
    return frozenset((_sanitize(k), str(v)) for k, v in (attributes or {}).items())


def _exemplars_of(metrics_data: MetricsData) -> dict[_Key, Exemplar]:
    """The latest exemplar per (histogram, attribute set, bucket upper bound)."""
    found: dict[_Key, Exemplar] = {}
    for resource_metrics in metrics_data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if not isinstance(metric.data, Histogram):
                    continue
                prefix = _sanitize(metric.name)
                for point in metric.data.data_points:
                    labels = _labels(point.attributes)
                    bounds = list(point.explicit_bounds)
                    for exemplar in point.exemplars:
                        if exemplar.trace_id is None or exemplar.span_id is None:
                            continue
                        bound = next((b for b in bounds if exemplar.value <= b), float("inf"))
                        found[(prefix, labels, bound)] = Exemplar(
                            {
                                "trace_id": format(exemplar.trace_id, "032x"),
                                "span_id": format(exemplar.span_id, "016x"),
                            },
                            exemplar.value,
                            exemplar.time_unix_nano / 1e9,
                        )
    return found


def _annotate(family: str, sample: Any, exemplars: Mapping[_Key, Exemplar]) -> Any:
    if not sample.name.endswith("_bucket"):
        return sample
    labels = sample.labels
    bound = float(labels.get("le", "inf"))
    own = frozenset(
        (k, v) for k, v in labels.items() if v != "" and k != "le" and not k.startswith("otel_")
    )
    for prefix in _prefixes(family):
        exemplar = exemplars.get((prefix, own, bound))
        if exemplar is not None:
            return sample._replace(exemplar=exemplar)
    return sample


def _prefixes(family: str) -> Iterable[str]:
    """The OpenTelemetry metric names (sanitised) a family name may come from.

    The exporter appends the unit (``cqrs.command.duration`` with unit ``s``
    becomes ``cqrs_command_duration_seconds``), so the family name and its
    shorter forms are tried.
    """
    parts = family.split("_")
    for end in range(len(parts), 0, -1):
        yield "_".join(parts[:end])
