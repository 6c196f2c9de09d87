"""The Grafana dashboard JSON: it loads, is portable, and every panel queries the fixed names."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.dashboards.telemetry_names import COMMON_LABELS, SERIES_LABELS, TOTALS
from tests.support.prometheus import (
    dashboard_queries,
    dashboard_variable_queries,
    iter_panels,
    substitute_variables,
)

PROMETHEUS_DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRAFANA_BUILTIN = {"type": "grafana", "uid": "-- Grafana --"}


def _datasources(node: Any) -> list[Any]:
    """Every ``datasource`` value anywhere in the JSON."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                found.append(value)
            found.extend(_datasources(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_datasources(item))
    return found


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in iter_panels(dashboard) if panel.get("type") != "row"]


def _panel(dashboard: dict[str, Any], title_part: str) -> dict[str, Any]:
    matches = [p for p in _panels(dashboard) if title_part.lower() in p["title"].lower()]
    assert len(matches) == 1, f"expected one panel titled like {title_part!r}: {matches}"
    return matches[0]


def test_the_dashboard_is_the_persistence_latency_dashboard(dashboard: dict[str, Any]) -> None:
    assert dashboard["title"] == "Persistence latency"
    assert dashboard["uid"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard.get("id") is None  # importable into any Grafana


def test_a_datasource_variable_selects_prometheus(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"


def test_no_datasource_uid_is_hard_coded(dashboard: dict[str, Any]) -> None:
    datasources = _datasources(dashboard)
    assert datasources, "panels must name the ${datasource} variable"
    for datasource in datasources:
        assert datasource in (PROMETHEUS_DATASOURCE, GRAFANA_BUILTIN), datasource
    for panel in _panels(dashboard):
        assert panel.get("datasource") == PROMETHEUS_DATASOURCE, panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource") == PROMETHEUS_DATASOURCE, (panel["title"], target)


def test_every_panel_has_a_query_and_a_unique_title(dashboard: dict[str, Any]) -> None:
    panels = _panels(dashboard)
    assert len(panels) >= 6
    for panel in panels:
        exprs = [t.get("expr", "").strip() for t in panel.get("targets", [])]
        assert exprs, f"panel {panel['title']!r} has no target"
        assert all(exprs), f"panel {panel['title']!r} has a target without a PromQL expr"
    titles = [panel["title"] for panel in panels]
    assert len(titles) == len(set(titles)), titles
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), ids
    ref_ids = [(p["id"], t["refId"]) for p in panels for t in p["targets"]]
    assert len(ref_ids) == len(set(ref_ids))


def test_panels_do_not_overlap_on_the_grid(dashboard: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in _panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


def test_queries_use_only_the_fixed_metric_names_and_labels(dashboard: dict[str, Any]) -> None:
    exprs = [q.expr for q in dashboard_queries(dashboard)]
    for _name, query in dashboard_variable_queries(dashboard):
        # label_values(selector, label) -> check it as `selector` grouped `by (label)`
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query.strip())
        assert match, query
        exprs.append(f"count by ({match[2]}) ({match[1]})")
    used_metrics: set[str] = set()
    for expr in exprs:
        # metric names: what is left once matchers `{...}` and groupings `by (...)` are cut
        bare = re.sub(r"\{[^}]*\}|\bby\s*\([^)]*\)", " ", expr)
        metrics = set(re.findall(r"\b(cqrs_\w+)", bare))
        assert metrics, f"no cqrs_* metric in {expr!r}"
        assert metrics <= SERIES_LABELS.keys(), f"unknown metric in {expr!r}"
        used_metrics |= metrics
        known_labels = set().union(*(SERIES_LABELS[m] for m in metrics)) | COMMON_LABELS
        # label matchers `name=~"..."`, grouping `by (a, b)` and templated `{{name}}` legends
        labels = set(re.findall(r"(\w+)\s*[=!]~?\s*\"", expr))
        for group in re.findall(r"\bby\s*\(([^)]*)\)", expr):
            labels |= {label.strip() for label in group.split(",") if label.strip()}
        assert labels <= known_labels, f"unknown label {labels - known_labels} in {expr!r}"
    for panel in _panels(dashboard):
        for target in panel["targets"]:
            legend_labels = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
            assert legend_labels <= set().union(*SERIES_LABELS.values()) | COMMON_LABELS
    # all four instruments are shown somewhere
    for prefix in ("cqrs_command_duration", "cqrs_query_duration", "cqrs_persistence_duration"):
        assert any(m.startswith(prefix) for m in used_metrics), prefix
    assert "cqrs_events_stored_total" in used_metrics
    assert "cqrs_outbox_enqueued_total" in used_metrics


def test_rates_use_the_rate_interval(dashboard: dict[str, Any]) -> None:
    for query in dashboard_queries(dashboard):
        windows = re.findall(r"\b(?:rate|increase|irate)\s*\([^\[]*\[([^\]]+)\]", query.expr)
        if query.panel in TOTALS:  # a counter's total since the process started
            assert not windows, query.expr
            assert re.fullmatch(r"sum\(cqrs_\w+\{[^}]*\}\)", query.expr), query.expr
            continue
        assert windows, f"{query.panel!r}: expected a rate over $__rate_interval"
        assert set(windows) == {"$__rate_interval"}, (query.panel, windows)


def test_persistence_quantiles_are_p50_p95_p99_by_aggregate_type(dashboard: dict[str, Any]) -> None:
    panel = _panel(dashboard, "Persistence latency p50")
    exprs = [t["expr"] for t in panel["targets"]]
    quantiles = [re.findall(r"^histogram_quantile\(([\d.]+),", e) for e in exprs]
    assert quantiles == [["0.5"], ["0.95"], ["0.99"]]
    for expr in exprs:
        assert "cqrs_persistence_duration_seconds_bucket" in expr
        assert re.search(r"sum by \(le, cqrs_aggregate_type\)", expr), expr
    assert panel["fieldConfig"]["defaults"]["unit"] == "s"


def test_command_duration_is_split_by_type_and_outcome(dashboard: dict[str, Any]) -> None:
    panel = _panel(dashboard, "Command duration")
    assert len(panel["targets"]) == 3
    for target in panel["targets"]:
        assert "sum by (le, cqrs_message_type, cqrs_outcome)" in target["expr"]
        assert "cqrs_command_duration_seconds_bucket" in target["expr"]


def test_the_heatmap_reads_buckets_in_heatmap_format(dashboard: dict[str, Any]) -> None:
    panel = _panel(dashboard, "heatmap")
    assert panel["type"] == "heatmap"
    assert panel["options"]["calculate"] is False  # buckets come from Prometheus
    (target,) = panel["targets"]
    assert target["format"] == "heatmap"
    assert target["legendFormat"] == "{{le}}"
    assert "sum by (le)" in target["expr"]
    assert "cqrs_persistence_duration_seconds_bucket" in target["expr"]


@pytest.mark.parametrize(
    ("title_part", "needle"),
    [
        ("Events stored and outbox", "rate(cqrs_events_stored_total"),
        ("Events stored and outbox", "rate(cqrs_outbox_enqueued_total"),
        ("refused or failed / s", 'cqrs_outcome!="success"'),
        ("refused or failed, ratio by type", 'cqrs_outcome!="success"'),
        ("Query duration", "cqrs_query_duration_seconds_bucket"),
    ],
)
def test_the_issue_s_panels_are_there(
    dashboard: dict[str, Any], title_part: str, needle: str
) -> None:
    panel = _panel(dashboard, title_part)
    assert any(needle in t["expr"] for t in panel["targets"]), panel["targets"]


def test_refusals_and_errors_are_broken_down_by_their_type(dashboard: dict[str, Any]) -> None:
    panel = _panel(dashboard, "refused or failed / s")
    assert (
        "sum by (cqrs_message_type, cqrs_outcome, cqrs_refusal_type, error_type)"
        in panel["targets"][0]["expr"]
    )


def test_totals_are_stat_panels_over_the_counters(dashboard: dict[str, Any]) -> None:
    for title in TOTALS:
        (panel,) = [p for p in _panels(dashboard) if p["title"] == title]
        assert panel["type"] == "stat"
        assert panel["options"]["reduceOptions"]["calcs"] == ["lastNotNull"]


def test_every_variable_in_a_query_is_defined(dashboard: dict[str, Any]) -> None:
    queries = dashboard_queries(dashboard, variables={"job": "cqrs-ddd-demo"})
    assert queries
    for query in queries:
        assert "$" not in query.promql, query.promql
        assert "[[" not in query.promql, query.promql
        assert 'job=~"cqrs-ddd-demo"' in query.promql
        if query.panel not in TOTALS:
            assert "[30s]" in query.promql  # $__rate_interval for a 1s scrape interval


def test_substitution_refuses_an_unknown_variable() -> None:
    with pytest.raises(KeyError, match=r"\$nope"):
        substitute_variables('up{job=~"$nope"}', {"job": ".*"})
    assert (
        substitute_variables(
            'a{x=~"${x:regex}"}[[y]] $__rate_interval',
            {"x": "1", "y": "2", "__rate_interval": "30s"},
        )
        == 'a{x=~"1"}2 30s'
    )
