"""The dashboards recipe, as README.md and dashboards/README.md give it, against a real Prometheus.

The recipe starts the stack (Prometheus scraping every 5 s, exemplar storage on),
then ``cqrs-ddd demo --metrics-port 9464 --duration 600 --rate 100 --keep-serving``.
This test runs that demo command (a free port instead of 9464, a shorter duration,
a throwaway database, ``--json`` for the summary, and the collector variable the
recipe suggests for traces) with a real Prometheus using the compose file's scrape
interval and flags, and Grafana's ``$__rate_interval`` for that interval (four
scrapes: 20 s). While the workload runs, every query of every panel must return
data; once it ended, each total panel must equal the summary line of the same
name; and the exemplars Prometheus stored must name traces the OTLP export holds.
"""

from __future__ import annotations

import math
import re
import shlex
import time
from pathlib import Path
from typing import Any

import pytest

from tests.cli.demo_process import DemoProcess
from tests.dashboards.telemetry_names import TOTALS
from tests.observability.collector import OtlpReceiver
from tests.support.prometheus import (
    PrometheusServer,
    evaluate_dashboard,
    free_port,
    iter_panels,
    sample_values,
)

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
JOB = "cqrs-ddd-demo"
DURATION_S = 45  # the recipe says 600; long enough here for 8 scrapes at 5 s
SUMMARY_LINES = {"events stored": ("events", "total"), "outbox enqueued": ("outbox", "total")}


def recipe_demo_command(path: Path) -> list[str]:
    """The ``cqrs-ddd demo`` line of the recipe in ``path``, split into arguments."""
    lines = {
        line.strip()
        for line in path.read_text().splitlines()
        if line.startswith("cqrs-ddd demo --metrics-port")  # a command line of a sh block
    }
    assert len(lines) == 1, (path, lines)
    return shlex.split(lines.pop())


def compose_scrape_interval() -> str:
    intervals = {
        re.search(r"^\s*scrape_interval:\s*(\S+)", (ROOT / path).read_text(), re.M)[1]  # type: ignore[index]
        for path in (
            "dashboards/prometheus/prometheus.yml",
            "dashboards/prometheus/prometheus.compose.yml",
        )
    }
    assert len(intervals) == 1, intervals
    return intervals.pop()


def compose_prometheus_flags() -> list[str]:
    compose = (ROOT / "dashboards/docker-compose.yml").read_text()
    return re.findall(r"^\s*- (--enable-feature=\S+)", compose, re.M)


def _with(args: list[str], option: str, value: str) -> list[str]:
    index = args.index(option)
    return [*args[: index + 1], value, *args[index + 2 :]]


def _total(results: dict[Any, list[dict[str, Any]]], title: str) -> float:
    (value,) = [sample_values(r) for q, r in results.items() if q.panel == title]
    assert len(value) == 1, (title, value)
    return value[0]


def test_both_readmes_give_the_same_recipe() -> None:
    assert recipe_demo_command(ROOT / "README.md") == recipe_demo_command(
        ROOT / "dashboards/README.md"
    )
    for path in ("README.md", "dashboards/README.md"):
        assert "cd dashboards && docker compose up -d && cd .." in (ROOT / path).read_text()


@pytest.mark.timeout(300)
def test_the_recipe_shows_data_in_every_panel_totals_and_exemplars(
    tmp_path: Path, dashboard_path: Path, dashboard: dict[str, Any]
) -> None:
    command = recipe_demo_command(ROOT / "dashboards/README.md")
    assert command[:2] == ["cqrs-ddd", "demo"]
    port = free_port()
    args = _with(_with(command[2:], "--metrics-port", str(port)), "--duration", str(DURATION_S))
    assert "--keep-serving" in args
    args += [f"--database-url=sqlite:///{tmp_path / 'demo.db'}", "--json", "--seed=15"]
    interval = compose_scrape_interval()
    assert interval == "5s"
    flags = compose_prometheus_flags()
    assert "--enable-feature=exemplar-storage" in flags

    with (
        OtlpReceiver() as receiver,
        PrometheusServer(
            [f"127.0.0.1:{port}"],
            workdir=tmp_path,
            job=JOB,
            scrape_interval=interval,
            extra_args=flags,
        ) as prom,
    ):
        demo = DemoProcess(
            args,
            cwd=tmp_path,
            log_path=tmp_path / "demo.log",
            env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint},
        )
        try:
            started = time.time()
            # Five scrapes of the running workload: a 20 s rate window holds four.
            prom.wait_for_scrapes(5, timeout=DURATION_S)
            assert demo.summary() is None, "the workload ended before the panels were read"
            variables = {"job": JOB, "__rate_interval": "20s"}  # Grafana's, for 5 s scrapes
            running = evaluate_dashboard(prom, dashboard_path, variables=variables)
            targets = [t for p in iter_panels(dashboard) for t in p.get("targets", [])]
            assert len(running) == len(targets)
            for query, result in running.items():
                values = sample_values(result)
                assert any(math.isfinite(v) and v > 0 for v in values), (query.panel, query.promql)

            summary = demo.wait_for_summary(timeout=DURATION_S + 60)
            prom.wait_for_scrape_after(summary["workload_ended"])
            ended = evaluate_dashboard(prom, dashboard_path, variables=variables)
            lines = {
                "events stored": summary["events"]["total"],
                "outbox enqueued": summary["outbox"]["total"],
                "queries": summary["queries"],
            }
            assert set(TOTALS.values()) == set(lines)
            for title, line in TOTALS.items():
                assert _total(ended, title) == lines[line], (title, line)

            exemplars = prom.query_exemplars(
                f'cqrs_command_duration_seconds_bucket{{job="{JOB}"}}', started, time.time()
            )
            exemplar_traces = {
                e["labels"]["trace_id"] for series in exemplars for e in series["exemplars"]
            }
        finally:
            demo.stop()
        exported = {span.trace_id.hex() for _, span in receiver.spans()}
    assert exemplar_traces, "Prometheus stored no exemplar"
    assert exemplar_traces <= exported
