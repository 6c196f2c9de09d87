"""With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, the demo's traces (and metrics) reach the collector."""

from __future__ import annotations

import json
import sqlite3
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
    failed = [span for _, span in spans if attributes(span.attributes).get("error.type")]
    assert failed, "the workload's conflicts and refusals are traced as errors"
    assert {"cqrs.command.duration", "cqrs.persistence.duration"} <= metric_names

    # The outbox carries the W3C trace context of the command that wrote it.
    with sqlite3.connect(database) as conn:
        contexts = [json.loads(row[0]) for row in conn.execute("SELECT trace_context FROM outbox")]
    assert contexts
    assert all(context.get("traceparent", "").startswith("00-") for context in contexts)
