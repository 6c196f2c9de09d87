"""The Projections dashboard: its panels query the fixed names, and work on a real Prometheus.

A real Prometheus scrapes ``cqrs-ddd demo`` (whose ``customer_orders``
projection runs beside the workload, see ``cli/demo_read_model.py``); every
panel query must return finite values, the lag series must exist for the
projection, and the events-applied counter must equal the events the
projection read, which is the head position of the demo's fresh database.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from cqrs_ddd_core.telemetry import names
from tests.cli.demo_process import DemoProcess
from tests.dashboards.conftest import DASHBOARDS
from tests.support.prometheus import (
    PrometheusServer,
    assert_exact_count,
    evaluate_dashboard,
    evaluate_dashboard_variables,
    free_port,
    iter_panels,
    sample_values,
)

PROJECTIONS_JSON = DASHBOARDS / "grafana" / "projections.json"
JOB = "cqrs-ddd-demo"
PROJECTION = "customer_orders"

# As the OpenTelemetry Prometheus exporter spells the library's projection instruments.
SERIES = {
    "cqrs_projection_lag_positions",
    "cqrs_projection_lag_seconds",
    "cqrs_projection_events_applied_total",
    "cqrs_projection_batch_duration_seconds_bucket",
}


@pytest.fixture(scope="module")
def projections_dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(PROJECTIONS_JSON.read_text())
    return loaded


def test_the_panels_query_only_the_documented_projection_names(
    projections_dashboard: dict[str, Any],
) -> None:
    documented = {
        names.METRIC_PROJECTION_LAG_POSITIONS.replace(".", "_"),
        names.METRIC_PROJECTION_LAG.replace(".", "_") + "_seconds",
        names.METRIC_PROJECTION_EVENTS_APPLIED.replace(".", "_") + "_total",
        names.METRIC_PROJECTION_BATCH_DURATION.replace(".", "_") + "_seconds_bucket",
    }
    assert documented == SERIES
    used = {
        metric
        for panel in iter_panels(projections_dashboard)
        for target in panel["targets"]
        for metric in re.findall(r"\bcqrs_\w+", target["expr"])
    } - {"cqrs_projection_name"}  # the label
    assert used == SERIES
    labels = {
        label
        for panel in iter_panels(projections_dashboard)
        for target in panel["targets"]
        for label in re.findall(r"\b(cqrs_\w+)\s*=~", target["expr"])
    }
    assert labels == {names.ATTR_PROJECTION_NAME.replace(".", "_")}
    titles = [panel["title"] for panel in iter_panels(projections_dashboard)]
    assert any("lag" in title.lower() and "seconds" in title for title in titles)
    assert any("positions" in title for title in titles)


def test_the_dashboard_is_portable(projections_dashboard: dict[str, Any]) -> None:
    text = json.dumps(projections_dashboard)
    assert projections_dashboard["uid"] == "cqrs-ddd-projections"
    assert '"uid": "${datasource}"' in text
    variables = [v["name"] for v in projections_dashboard["templating"]["list"]]
    assert variables == ["datasource", "job", "projection"]


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PrometheusServer, Any]]:
    workdir = tmp_path_factory.mktemp("projections-proof")
    port = free_port()
    with PrometheusServer([f"127.0.0.1:{port}"], workdir=workdir, job=JOB) as prom:
        demo = DemoProcess(
            [
                "--commands=600",
                "--concurrency=8",
                f"--database-url=sqlite:///{workdir / 'demo.db'}",
                f"--metrics-port={port}",
                "--serve-after=300",
                "--json",
                "--seed=4",
            ],
            cwd=workdir,
            log_path=workdir / "demo.log",
        )
        try:
            summary = demo.wait_for_summary(timeout=300)
            prom.wait_for_scrapes(3)
            # The final catch-up ran before the summary was printed: a scrape after
            # the summary holds the final counters and gauges.
            prom.wait_for_scrape_after(time.time())
            yield prom, summary
        finally:
            demo.stop()


@pytest.mark.prometheus
@pytest.mark.slow
def test_every_projection_panel_returns_values_on_a_real_prometheus(
    scraped: tuple[PrometheusServer, Any],
) -> None:
    prom, summary = scraped
    read_model = summary["database_check"]["read_model"]
    assert read_model["matches_events"], read_model

    results = evaluate_dashboard(prom, PROJECTIONS_JSON, variables={"job": JOB})

    assert len(results) == 5
    for query, result in results.items():
        assert result, f"{query.panel} [{query.ref_id}] returned nothing: {query.promql}"
        values = sample_values(result)
        assert all(math.isfinite(v) and v >= 0 for v in values), (query.panel, values)
        assert {s["metric"]["cqrs_projection_name"] for s in result} == {PROJECTION}
    offered = evaluate_dashboard_variables(prom, PROJECTIONS_JSON, variables={"job": JOB})
    assert offered["projection"] == [PROJECTION]


@pytest.mark.prometheus
@pytest.mark.slow
def test_events_applied_and_the_final_lag_agree_with_the_demos_read_model(
    scraped: tuple[PrometheusServer, Any],
) -> None:
    prom, summary = scraped
    read_model = summary["database_check"]["read_model"]
    selector = f'job="{JOB}", cqrs_projection_name="{PROJECTION}"'

    # A fresh SQLite file: positions 1..head, each read (and applied) exactly once.
    assert_exact_count(
        prom,
        f"sum(cqrs_projection_events_applied_total{{{selector}}})",
        read_model["head"],
    )
    assert prom.query_value(f"max(cqrs_projection_lag_positions{{{selector}}})") == 0
    assert prom.query_value(f"max(cqrs_projection_lag_seconds{{{selector}}})") == 0
