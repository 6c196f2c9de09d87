"""THE PROOF: the dashboard's queries work against a real Prometheus scraping the real demo.

``cqrs-ddd demo --metrics-port P --serve-after S --json`` runs the shop workload
(orders, invoices, user preferences; real conflicts and refusals) on a SQLite file
and serves the library's metrics on 127.0.0.1:P; a real Prometheus (Debian's
binary) scrapes it every second. Once the workload has ended and Prometheus has
scraped it once more, every PromQL expression of every panel, with the dashboard
variables substituted, is evaluated through Prometheus's HTTP API and must return
finite values, and what Prometheus computed is compared with the demo's summary:

* counts exactly: events stored and outbox messages enqueued per aggregate type
  (and the rows the demo counted in its database), command dispatches per type,
  refusals per type, queries;
* latency quantiles to the histogram's bucket: the demo computes the persistence
  latency from each unit of work's step timings itself, and takes the command and
  query durations from the metrics middleware, so the exact nearest-rank quantile
  and Prometheus's ``histogram_quantile`` must share a bucket.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.cli.demo_process import DemoProcess
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
COMMANDS = 1500  # several seconds of workload: Prometheus scrapes it while it runs
QUANTILE_NAMES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
EVENT_SOURCED = {"Order", "Invoice"}
QUERY_TYPES = {"GetOrderSummary", "GetPreferences"}


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
        demo = DemoProcess(
            [
                f"--commands={COMMANDS}",
                "--concurrency=8",
                f"--database-url=sqlite:///{workdir / 'demo.db'}",
                f"--metrics-port={port}",
                "--serve-after=300",  # stopped below, once everything is compared
                "--json",
                "--seed=6",
            ],
            cwd=workdir,
            log_path=workdir / "demo.log",
        )
        try:
            summary = demo.wait_for_summary(timeout=300)
            scrapes = prom.wait_for_scrapes(3)
            # Prometheus must hold the final counters before anything is compared.
            prom.wait_for_scrape_after(summary["workload_ended"])
            yield ScrapedRun(prom=prom, summary=summary, scrapes=scrapes)
        finally:
            demo.stop()


def test_the_demo_ran_the_workload_with_conflicts_errors_and_queries(run: ScrapedRun) -> None:
    summary = run.summary
    assert summary["commands"] == COMMANDS
    assert not summary["interrupted"]
    assert summary["conflicts"] > 0
    assert len(summary["errors_by_type"]) >= 2  # conflicts and the orders' refusals
    assert summary["queries"] > 0
    assert summary["database_check"]["integrity"]["ok"], summary["database_check"]
    assert summary["database_check"]["events_match"]
    assert summary["database_check"]["outbox_match"]
    assert summary["metrics_url"].endswith("/metrics")


def test_prometheus_scraped_the_demo_several_times(run: ScrapedRun) -> None:
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
        if re.search(r"\bratio\b", query.panel.lower()):  # not "duration"
            assert all(v <= 1 for v in values), (query.panel, values)


def _by_panel(
    run: ScrapedRun, dashboard_path: Path, title: str, ref_id: str | None = None
) -> list[dict[str, Any]]:
    results = evaluate_dashboard(run.prom, dashboard_path, variables={"job": JOB})
    samples = [
        s
        for q, result in results.items()
        if q.panel.startswith(title) and ref_id in (None, q.ref_id)
        for s in result
    ]
    assert samples, title
    return samples


def test_panels_split_by_the_demos_label_values(run: ScrapedRun, dashboard_path: Path) -> None:
    summary = run.summary
    aggregate_types = set(summary["persistence_latency_by_aggregate_type_s"])
    assert aggregate_types == {"Order", "Invoice", "UserPreferences"}
    command_types = set(summary["dispatches_by_type"])
    assert "IssueInvoice" in command_types  # the nested command is measured too

    persistence = _by_panel(run, dashboard_path, "Persistence latency p50")
    per_type = {s["metric"]["cqrs_aggregate_type"]: s["value"][1] for s in persistence}
    assert set(per_type) == aggregate_types
    assert all(math.isfinite(float(v)) for v in per_type.values()), per_type

    for ref_id, figure in (
        ("A", "events_stored_by_aggregate_type"),
        ("B", "outbox_enqueued_by_aggregate_type"),
    ):
        samples = _by_panel(run, dashboard_path, "Events stored and outbox", ref_id)
        assert {s["metric"]["cqrs_aggregate_type"] for s in samples} == set(summary[figure])

    commands = _by_panel(run, dashboard_path, "Command duration")
    assert {s["metric"]["cqrs_message_type"] for s in commands} == command_types
    # The demo's conflicts and closed orders are refusals: results, not errors.
    assert {s["metric"]["cqrs_outcome"] for s in commands} == {"success", "refused"}

    refused = _by_panel(run, dashboard_path, "Commands refused or failed / s")
    assert {s["metric"]["cqrs_refusal_type"] for s in refused} == set(summary["errors_by_type"])

    ratios = _by_panel(run, dashboard_path, "Commands refused or failed, ratio by type")
    assert {s["metric"]["cqrs_message_type"] for s in ratios} == command_types

    queries = _by_panel(run, dashboard_path, "Query duration")
    assert {s["metric"]["cqrs_message_type"] for s in queries} == set(summary["queries_by_type"])


def test_the_dashboard_variables_offer_the_demos_values(
    run: ScrapedRun, dashboard_path: Path
) -> None:
    offered = evaluate_dashboard_variables(run.prom, dashboard_path, variables={"job": JOB})
    assert offered["job"] == [JOB]
    assert set(offered["aggregate_type"]) == set(
        run.summary["persistence_latency_by_aggregate_type_s"]
    )
    assert set(offered["message_type"]) == set(run.summary["dispatches_by_type"])  # commands


def test_event_counts_agree_exactly_with_the_summary_and_the_database(run: ScrapedRun) -> None:
    summary = run.summary
    check = summary["database_check"]
    job = f'job="{JOB}"'
    per_type = f"sum by (cqrs_aggregate_type) (cqrs_events_stored_total{{{job}}})"
    # What the demo counted from the units of work it saw commit...
    assert_exact_count(
        run.prom, per_type, summary["events_stored_by_aggregate_type"], by="cqrs_aggregate_type"
    )
    # ... is what its database holds: the event-sourced events are rows of the event
    # store (UserPreferences' are not), and every event is an outbox message.
    assert set(check["events_by_aggregate_type"]) == EVENT_SOURCED
    assert_exact_count(
        run.prom, per_type, check["events_by_aggregate_type"], by="cqrs_aggregate_type"
    )
    assert_exact_count(run.prom, f"sum(cqrs_events_stored_total{{{job}}})", check["events"])
    enqueued = f"sum by (cqrs_aggregate_type) (cqrs_outbox_enqueued_total{{{job}}})"
    assert_exact_count(
        run.prom, enqueued, check["outbox_by_aggregate_type"], by="cqrs_aggregate_type"
    )
    assert_exact_count(
        run.prom, enqueued, summary["outbox_enqueued_by_aggregate_type"], by="cqrs_aggregate_type"
    )
    assert_exact_count(run.prom, f"sum(cqrs_outbox_enqueued_total{{{job}}})", check["outbox"])


def test_command_query_and_error_counts_agree_exactly(run: ScrapedRun) -> None:
    summary = run.summary
    job = f'job="{JOB}"'
    assert_exact_count(
        run.prom,
        f"sum by (cqrs_message_type) (cqrs_command_duration_seconds_count{{{job}}})",
        summary["dispatches_by_type"],
        by="cqrs_message_type",
    )
    assert_exact_count(
        run.prom,
        f"sum by (cqrs_refusal_type) (cqrs_command_duration_seconds_count{{{job}, "
        f'cqrs_outcome="refused"}})',
        summary["errors_by_type"],
        by="cqrs_refusal_type",
    )
    assert_exact_count(
        run.prom,
        f"sum by (cqrs_message_type) (cqrs_query_duration_seconds_count{{{job}}})",
        summary["queries_by_type"],
        by="cqrs_message_type",
    )
    assert_exact_count(
        run.prom,
        f"sum by (cqrs_aggregate_type) (cqrs_persistence_duration_seconds_count{{{job}}})",
        summary["persistence_samples_by_aggregate_type"],
        by="cqrs_aggregate_type",
    )


def test_latency_quantiles_agree_within_a_bucket(run: ScrapedRun) -> None:
    summary = run.summary
    job = f'job="{JOB}"'
    checked = 0
    for aggregate_type, quantiles in summary["persistence_latency_by_aggregate_type_s"].items():
        selector = f'{job}, cqrs_aggregate_type="{aggregate_type}"'
        for name, exact in quantiles.items():
            expr = (
                f"histogram_quantile({QUANTILE_NAMES[name]}, sum by (le) "
                f"(cqrs_persistence_duration_seconds_bucket{{{selector}}}))"
            )
            assert_quantile_within_bucket(run.prom, expr, exact, BUCKETS)
            checked += 1
    for message_type, quantiles in summary["latency_by_message_type_s"].items():
        metric = "query" if message_type in QUERY_TYPES else "command"
        selector = f'{job}, cqrs_message_type="{message_type}"'
        for name, exact in quantiles.items():
            expr = (
                f"histogram_quantile({QUANTILE_NAMES[name]}, sum by (le) "
                f"(cqrs_{metric}_duration_seconds_bucket{{{selector}}}))"
            )
            assert_quantile_within_bucket(run.prom, expr, exact, BUCKETS)
            checked += 1
    assert checked == 3 * (3 + 6 + 2)  # 3 aggregate types, 6 command types, 2 query types


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
