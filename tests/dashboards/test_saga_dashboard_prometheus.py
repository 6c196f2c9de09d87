"""THE PROOF for sagas: the saga dashboard's queries on a real Prometheus scraping the demo.

``cqrs-ddd demo --order-process`` runs the shop with the order process (a saga per
confirmed order; a share of payments declined, so sagas complete and compensate)
and serves the metrics; a real Prometheus scrapes it. Every panel expression of
``dashboards/grafana/sagas.json`` must evaluate, and what Prometheus holds must
equal the demo's summary, which the demo checked against its database: sagas
started, completed and compensated per type exactly, none failed, none open.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.cli.demo_process import DemoProcess
from tests.dashboards.conftest import DASHBOARDS
from tests.support.prometheus import (
    PrometheusServer,
    assert_exact_count,
    evaluate_dashboard,
    evaluate_dashboard_variables,
    free_port,
    sample_values,
)

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

JOB = "cqrs-ddd-demo-sagas"
SAGAS = DASHBOARDS / "grafana" / "sagas.json"
ZERO_PANELS = ("Open sagas",)  # every saga has ended: open is 0, and must be exported as 0


@dataclass(frozen=True)
class ScrapedRun:
    prom: PrometheusServer
    summary: dict[str, Any]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScrapedRun]:
    workdir = tmp_path_factory.mktemp("saga-dashboard-proof")
    port = free_port()
    with PrometheusServer([f"127.0.0.1:{port}"], workdir=workdir, job=JOB) as prom:
        demo = DemoProcess(
            [
                "--commands=1500",
                "--concurrency=8",
                f"--database-url=sqlite:///{workdir / 'demo.db'}",
                f"--metrics-port={port}",
                "--serve-after=300",  # stopped below, once everything is compared
                "--json",
                "--seed=7",
                "--order-process=0.3",
            ],
            cwd=workdir,
            log_path=workdir / "demo.log",
        )
        try:
            summary = demo.wait_for_summary(timeout=300)
            prom.wait_for_scrapes(3)
            prom.wait_for_scrape_after(summary["workload_ended"])
            yield ScrapedRun(prom=prom, summary=summary)
        finally:
            demo.stop()


def test_the_demo_ran_sagas_that_completed_and_compensated(run: ScrapedRun) -> None:
    sagas = run.summary["sagas"]
    assert sagas["ok"], sagas
    assert sagas["by_status"]["completed"] > 0
    assert sagas["by_status"]["compensated"] > 0
    assert set(sagas["by_status"]) == {"completed", "compensated"}


def test_every_saga_panel_query_returns_values(run: ScrapedRun) -> None:
    results = evaluate_dashboard(run.prom, SAGAS, variables={"job": JOB})
    assert len(results) >= 10
    for query, result in results.items():
        values = [v for v in sample_values(result) if math.isfinite(v)]
        if "failed" in query.promql and "rate(" in query.promql and "started" not in query.promql:
            assert values == [], (query.panel, result)  # no saga failed: no series at all
        elif query.panel.startswith(ZERO_PANELS):
            assert values == [0.0], (query.panel, result)
        else:
            assert values, (query.panel, query.promql)
            assert any(v > 0 for v in values), (query.panel, query.promql, result)
            assert all(v >= 0 for v in values), (query.panel, values)
        if "ratio" in query.panel.lower():
            assert all(0 <= v <= 1 for v in values), (query.panel, values)


def test_the_saga_counts_agree_exactly_with_the_summary(run: ScrapedRun) -> None:
    sagas = run.summary["sagas"]
    job = f'job="{JOB}"'
    assert_exact_count(
        run.prom,
        f"sum by (cqrs_saga_type) (cqrs_saga_started_total{{{job}}})",
        {"fulfilment": sagas["started"]},
        by="cqrs_saga_type",
    )
    for status in ("completed", "compensated"):
        assert_exact_count(
            run.prom,
            f"sum by (cqrs_saga_type) (cqrs_saga_{status}_total{{{job}}})",
            {"fulfilment": sagas["by_status"][status]},
            by="cqrs_saga_type",
        )
    assert run.prom.query(f"cqrs_saga_failed_total{{{job}}}") == []


def test_step_durations_are_split_by_step(run: ScrapedRun) -> None:
    job = f'job="{JOB}"'
    result = run.prom.query(
        f"sum by (cqrs_saga_step) (cqrs_saga_step_duration_seconds_count{{{job}}})"
    )
    counts = {s["metric"]["cqrs_saga_step"]: float(s["value"][1]) for s in result}
    by_status = run.summary["sagas"]["by_status"]
    started = run.summary["sagas"]["started"]
    assert counts["start"] == started
    # Every saga reserved (once) and paid (once, refused or not); compensated ones
    # released their reservation: the reserve step ran twice for them.
    assert counts["reserve"] == started + by_status["compensated"]
    assert counts["pay"] == started
    assert counts["ship"] == by_status["completed"]


def test_the_saga_type_variable_offers_the_demos_saga(run: ScrapedRun) -> None:
    offered = evaluate_dashboard_variables(run.prom, SAGAS, variables={"job": JOB})
    assert offered["job"] == [JOB]
    assert offered["saga_type"] == ["fulfilment"]
