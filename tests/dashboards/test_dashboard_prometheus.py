"""THE PROOF: the dashboard's queries work against a real Prometheus scraping the library's metrics.

A metrics source serves the library's metrics (names, units, attributes and buckets of
docs/design.md) on a free 127.0.0.1 port; a real Prometheus (Debian's binary) scrapes it
every second. Then every PromQL expression of every panel, with the dashboard variables
substituted, is evaluated through Prometheus's HTTP API and must return finite values,
and what Prometheus computed is compared with what the source says it recorded.

The source is ``_emitter.py`` (OpenTelemetry SDK + Prometheus reader, synthetic workload)
until the demo exists: ``MetricsSource`` is the seam where ``cqrs-ddd demo --metrics-port``
replaces it. Its contract: serve ``/metrics`` on the given port, run a finite workload,
then report (a JSON summary, see ``_emitter.py``) what it recorded and keep serving.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.dashboards.telemetry_names import BUCKETS
from tests.support.prometheus import (
    PrometheusServer,
    assert_exact_count,
    assert_quantile_within_bucket,
    evaluate_dashboard,
    evaluate_dashboard_variables,
    free_port,
    iter_panels,
    sample_values,
)

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

JOB = "cqrs-ddd-demo"
EMITTER = Path(__file__).with_name("_emitter.py")
WORKLOAD_SECONDS = 6.0


class MetricsSource:
    """The process whose metrics Prometheus scrapes (today the emitter; later the demo)."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.summary_path = workdir / "summary.json"
        self.log_path = workdir / "metrics-source.log"
        command = [
            sys.executable,
            str(EMITTER),
            f"--metrics-port={port}",
            f"--duration={WORKLOAD_SECONDS}",
            f"--summary-json={self.summary_path}",
        ]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )

    def wait_for_summary(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not self.summary_path.exists():
            if self.process.poll() is not None:
                pytest.fail(f"metrics source exited early:\n{self.log_path.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no summary after {timeout}s:\n{self.log_path.read_text()}")
            time.sleep(0.1)
        summary: dict[str, Any] = json.loads(self.summary_path.read_text())
        return summary

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


@dataclass(frozen=True)
class ScrapedRun:
    prom: PrometheusServer
    summary: dict[str, Any]
    scrapes: dict[str, int]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScrapedRun]:
    workdir = tmp_path_factory.mktemp("dashboard-proof")
    port = free_port()
    with PrometheusServer([f"127.0.0.1:{port}"], workdir=workdir, job=JOB) as prom:
        source = MetricsSource(port, workdir)
        try:
            summary = source.wait_for_summary(timeout=WORKLOAD_SECONDS + 60)
            scrapes = prom.wait_for_scrapes(3)
            # Prometheus must hold the final counters before anything is compared.
            prom.wait_for_scrape_after(summary["workload_ended"])
            yield ScrapedRun(prom=prom, summary=summary, scrapes=scrapes)
        finally:
            source.stop()


def test_prometheus_scraped_the_source_several_times(run: ScrapedRun) -> None:
    assert all(count >= 3 for count in run.scrapes.values()), run.scrapes
    (target,) = run.prom.active_targets()
    assert target["health"] == "up", target
    assert target["labels"]["job"] == JOB


def test_every_panel_query_returns_values(
    run: ScrapedRun, dashboard_path: Path, dashboard: dict[str, Any]
) -> None:
    results = evaluate_dashboard(run.prom, dashboard_path, variables={"job": JOB})
    targets = [t for p in iter_panels(dashboard) for t in p.get("targets", [])]
    assert len(results) == len(targets) >= 17  # every target of every panel
    empty = [f"{q.panel} [{q.ref_id}]: {q.promql}" for q, result in results.items() if not result]
    assert not empty, "queries with no result:\n" + "\n".join(empty)
    for query, result in results.items():
        values = sample_values(result)
        # The workload has every outcome, so every panel shows something above zero:
        # a fallback such as `or vector(0)` cannot hide a selector that matches nothing.
        assert any(math.isfinite(v) and v > 0 for v in values), (query.panel, query.promql, result)
        assert all(v >= 0 for v in values if math.isfinite(v)), (query.panel, values)
        if "ratio" in query.panel.lower():
            assert all(v <= 1 for v in values), (query.panel, values)


def _by_panel(run: ScrapedRun, dashboard_path: Path, title: str) -> list[dict[str, Any]]:
    results = evaluate_dashboard(run.prom, dashboard_path, variables={"job": JOB})
    samples = [s for q, result in results.items() if q.panel.startswith(title) for s in result]
    assert samples, title
    return samples


def test_panels_split_by_the_emitted_label_values(run: ScrapedRun, dashboard_path: Path) -> None:
    summary = run.summary
    persistence = _by_panel(run, dashboard_path, "Persistence latency p50")
    per_type = {s["metric"]["cqrs_aggregate_type"]: s["value"][1] for s in persistence}
    assert set(per_type) == set(summary["persistence_quantiles"])
    assert all(math.isfinite(float(v)) for v in per_type.values()), per_type

    events = _by_panel(run, dashboard_path, "Events persisted / s by aggregate type")
    assert {s["metric"]["cqrs_aggregate_type"] for s in events} == set(
        summary["events_persisted_by_aggregate_type"]
    )

    commands = _by_panel(run, dashboard_path, "Command duration")
    assert {s["metric"]["cqrs_message_type"] for s in commands} == set(summary["commands_by_type"])
    assert {s["metric"]["cqrs_outcome"] for s in commands} == {"success", "error"}

    errors = _by_panel(run, dashboard_path, "Command errors / s")
    assert {s["metric"]["error_type"] for s in errors} == set(summary["errors_by_type"])

    ratios = _by_panel(run, dashboard_path, "Command error ratio by type")
    assert {s["metric"]["cqrs_message_type"] for s in ratios} == set(summary["commands_by_type"])


def test_the_dashboard_variables_offer_the_emitted_values(
    run: ScrapedRun, dashboard_path: Path
) -> None:
    offered = evaluate_dashboard_variables(run.prom, dashboard_path, variables={"job": JOB})
    assert offered["job"] == [JOB]
    assert set(offered["aggregate_type"]) == set(run.summary["persistence_quantiles"])
    assert set(offered["message_type"]) == set(run.summary["commands_by_type"])


def test_counts_agree_exactly_with_what_was_emitted(run: ScrapedRun) -> None:
    summary = run.summary
    job = f'job="{JOB}"'
    assert summary["events_persisted"] > 0
    assert_exact_count(
        run.prom, f"sum(cqrs_events_persisted_total{{{job}}})", summary["events_persisted"]
    )
    assert_exact_count(
        run.prom,
        f"sum by (cqrs_aggregate_type) (cqrs_events_persisted_total{{{job}}})",
        summary["events_persisted_by_aggregate_type"],
        by="cqrs_aggregate_type",
    )
    assert_exact_count(
        run.prom, f"sum(cqrs_command_duration_seconds_count{{{job}}})", summary["commands"]
    )
    assert_exact_count(
        run.prom,
        f'sum by (error_type) (cqrs_command_duration_seconds_count{{{job}, cqrs_outcome="error"}})',
        summary["errors_by_type"],
        by="error_type",
    )
    assert_exact_count(
        run.prom, f"sum(cqrs_query_duration_seconds_count{{{job}}})", summary["queries"]
    )


def test_latency_quantiles_agree_within_a_bucket(run: ScrapedRun) -> None:
    job = f'job="{JOB}"'
    checked = 0
    for aggregate_type, quantiles in run.summary["persistence_quantiles"].items():
        for q, exact in quantiles.items():
            selector = f'{job}, cqrs_aggregate_type="{aggregate_type}"'
            expr = (
                f"histogram_quantile({q}, sum by (le) "
                f"(cqrs_persistence_duration_seconds_bucket{{{selector}}}))"
            )
            assert_quantile_within_bucket(run.prom, expr, exact, BUCKETS)
            checked += 1
    for q, exact in run.summary["command_quantiles"].items():
        expr = (
            f"histogram_quantile({q}, sum by (le) (cqrs_command_duration_seconds_bucket{{{job}}}))"
        )
        assert_quantile_within_bucket(run.prom, expr, exact, BUCKETS)
        checked += 1
    assert checked >= 6


def test_the_variables_filter_the_panels(run: ScrapedRun, dashboard_path: Path) -> None:
    # What Grafana sends for a multi-value selection: a regex alternation.
    chosen = {"job": JOB, "aggregate_type": "(Order|Invoice)", "message_type": "(PlaceOrder)"}
    results = evaluate_dashboard(run.prom, dashboard_path, variables=chosen)
    seen_aggregates: set[str] = set()
    seen_messages: set[str] = set()
    for query, result in results.items():
        for sample in result:
            labels = sample["metric"]
            seen_aggregates.add(labels.get("cqrs_aggregate_type", "Order"))
            if "cqrs_message_type" in labels and not query.panel.startswith("Query"):
                seen_messages.add(labels["cqrs_message_type"])
    assert seen_aggregates == {"Order", "Invoice"}
    assert seen_messages == {"PlaceOrder"}
