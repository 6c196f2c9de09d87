"""With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, the demo's traces (and metrics) reach the collector;
each signal goes where it was asked to, and an absent collector costs one warning line."""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from collections import Counter
from pathlib import Path

from tests.cli.demo_process import run_demo
from tests.observability.collector import OtlpReceiver, attributes


def test_traces_and_metrics_go_to_the_collector_of_the_environment(tmp_path: Path) -> None:
    database = tmp_path / "shop.db"
    with OtlpReceiver() as receiver:
        completed = run_demo(
            ["-n=60", "-c=2", f"--database-url=sqlite:///{database}", "--json", "--seed=2"],
            cwd=tmp_path,
            env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint},
        )
        assert completed.returncode == 0, completed.stderr[-4000:]
        spans = list(receiver.spans())
        metric_names = {
            metric.name
            for request in receiver.metrics
            for resource in request.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
        }
    summary = json.loads(completed.stdout)
    assert summary["traces_exported"] is True
    assert summary["metrics_url"] is None  # no --metrics-port: nothing served

    assert {resource["service.name"] for resource, _ in spans} == {"cqrs-ddd-demo"}
    names = Counter(span.name for _, span in spans)
    assert names["command PlaceOrder"] == summary["commands_by_type"]["PlaceOrder"]
    assert names["command IssueInvoice"] == summary["dispatches_by_type"]["IssueInvoice"] > 0
    by_id = {span.span_id: span for _, span in spans}
    invoice = next(span for _, span in spans if span.name == "command IssueInvoice")
    assert by_id[invoice.parent_span_id].name == "command ConfirmOrder"  # nested, one trace
    # Conflicts and closed orders are refusals: a result on the command span (no
    # ERROR status); the step that found a conflict failed, with the qualified error.type.
    refused = [
        span for _, span in spans if attributes(span.attributes).get("cqrs.outcome") == "refused"
    ]
    assert refused, "the workload's conflicts and refusals are traced as refusals"
    assert all(span.status.code != span.status.STATUS_CODE_ERROR for span in refused)
    assert all("error.type" not in attributes(span.attributes) for span in refused)
    assert sum(summary["errors_by_type"].values()) == len(
        [s for s in refused if s.name.startswith("command ") and not s.parent_span_id]
    )
    failed_steps = [
        span
        for _, span in spans
        if span.name.startswith(("INSERT", "UPDATE"))
        and attributes(span.attributes).get("error.type")
    ]
    for span in failed_steps:
        assert attributes(span.attributes)["error.type"].startswith("cqrs_ddd_core.exceptions.")
        assert attributes(span.attributes).get("cqrs.db.rows", 0) == 0
    assert {"cqrs.command.duration", "cqrs.persistence.duration"} <= metric_names

    # The outbox carries the W3C trace context of the command that wrote it.
    with sqlite3.connect(database) as conn:
        contexts = [json.loads(row[0]) for row in conn.execute("SELECT trace_context FROM outbox")]
    assert contexts
    assert all(context.get("traceparent", "").startswith("00-") for context in contexts)


def test_a_traces_endpoint_alone_exports_traces_and_no_metrics(tmp_path: Path) -> None:
    database = tmp_path / "shop.db"
    with OtlpReceiver() as receiver:
        completed = run_demo(
            ["-n=30", "-c=2", f"--database-url=sqlite:///{database}", "--json", "--seed=4"],
            cwd=tmp_path,
            env={"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{receiver.endpoint}/v1/traces"},
        )
        assert completed.returncode == 0, completed.stderr[-4000:]
        spans = list(receiver.spans())
        metrics = list(receiver.metrics)
    assert spans
    assert metrics == []  # no metrics endpoint was asked for: none exported anywhere
    assert "telemetry_collector_unreachable" not in completed.stderr


def test_an_absent_collector_costs_about_a_second_and_one_warning_line(tmp_path: Path) -> None:
    args = ["-n=100", "-c=4", "--json", "--seed=5", "--no-progress"]
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    started = time.perf_counter()
    baseline = run_demo([*args, f"--database-url=sqlite:///{tmp_path / 'a.db'}"], cwd=tmp_path)
    baseline_s = time.perf_counter() - started
    started = time.perf_counter()
    completed = run_demo(
        [*args, f"--database-url=sqlite:///{tmp_path / 'b.db'}"],
        cwd=tmp_path,
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"},
    )
    absent_s = time.perf_counter() - started

    assert baseline.returncode == 0, baseline.stderr[-4000:]
    assert completed.returncode == 0, completed.stderr[-4000:]
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, completed.stderr
    assert "telemetry_collector_unreachable" in lines[0]
    assert f"127.0.0.1:{port}" in lines[0]
    assert "Traceback" not in completed.stderr
    # Before the gate: about 14 s more (the exporters' retries at shutdown). The
    # SDK and exporter imports cost a few hundred ms; the bound is generous for a
    # loaded machine, and still far below the retries' cost.
    assert absent_s - baseline_s < 5.0, (absent_s, baseline_s)
