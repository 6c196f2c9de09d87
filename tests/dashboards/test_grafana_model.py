"""persistence-latency.json against Grafana's dashboard JSON model (the classic one).

No Grafana runs here, so the file is checked against the model Grafana's
dashboard kind declares (``kinds/dashboard/dashboard_kind.cue``, the classic
schema that Grafana 11 imports and provisions): the field types and ranges,
the schema version the compose file's Grafana writes, the panel types its
built-in plugins provide, a grid that fits 24 columns without overlaps, field
configs and threshold steps as the model wants them, and one Prometheus
datasource variable that every panel, target and query variable refers to.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.prometheus import iter_panels

SCHEMA_VERSIONS = range(36, 40)
"""Classic schema versions: 36 is the kind's default; Grafana 11.2 (the compose image) writes 39."""
GRAFANA_SCHEMA_VERSION = {"11.2": 39}
PANEL_TYPES = {"stat", "timeseries", "heatmap", "row", "gauge", "bargauge", "table", "text"}
"""Built-in panel plugins of Grafana 11 that this dashboard may use."""
VARIABLE_TYPES = {"query", "adhoc", "constant", "datasource", "interval", "textbox", "custom"}
COLOR_MODES = {"thresholds", "palette-classic", "palette-saturated", "continuous-GrYlRd", "fixed"}
DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}
UINT32 = range(0, 2**32)


def _uint(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value in UINT32


def _dashboard_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from iter_panels(dashboard)


def test_top_level_fields_have_the_model_s_types(dashboard: dict[str, Any]) -> None:
    assert isinstance(dashboard["title"], str)
    assert dashboard["title"]
    assert isinstance(dashboard["uid"], str)
    assert 8 <= len(dashboard["uid"]) <= 40
    assert dashboard["id"] is None or _uint(dashboard["id"])  # null until saved
    assert dashboard["schemaVersion"] in SCHEMA_VERSIONS
    assert dashboard["graphTooltip"] in (0, 1, 2)
    assert isinstance(dashboard["editable"], bool)
    assert dashboard.get("fiscalYearStartMonth", 0) in range(12)
    assert dashboard.get("refresh") is False or isinstance(dashboard.get("refresh"), str)
    assert set(dashboard["time"]) == {"from", "to"}
    assert all(isinstance(v, str) for v in dashboard["time"].values())
    intervals = dashboard["timepicker"]["refresh_intervals"]
    assert all(re.fullmatch(r"\d+[smhd]", i) for i in intervals), intervals
    assert dashboard["refresh"] in intervals
    assert all(isinstance(tag, str) for tag in dashboard["tags"])
    for annotation in dashboard["annotations"]["list"]:
        assert isinstance(annotation["name"], str)
        assert isinstance(annotation["enable"], bool)
        assert isinstance(annotation["iconColor"], str)
        assert set(annotation["datasource"]) <= {"type", "uid"}


def test_the_schema_version_is_the_one_the_compose_grafana_writes(
    dashboard: dict[str, Any], dashboards_dir: Path
) -> None:
    compose = (dashboards_dir / "docker-compose.yml").read_text()
    match = re.search(r"image:\s*grafana/grafana:(\d+\.\d+)", compose)
    assert match, "the compose file names a Grafana image"
    assert dashboard["schemaVersion"] == GRAFANA_SCHEMA_VERSION[match[1]]


def test_every_panel_is_a_known_type_with_the_model_s_fields(dashboard: dict[str, Any]) -> None:
    ids = []
    for panel in _dashboard_panels(dashboard):
        assert panel["type"] in PANEL_TYPES, panel["type"]
        assert _uint(panel["id"])
        ids.append(panel["id"])
        assert isinstance(panel["title"], str)
        assert panel["title"]
        assert isinstance(panel.get("description", ""), str)
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE_REF, panel["title"]
        assert isinstance(panel["options"], dict)
        config = panel["fieldConfig"]
        assert isinstance(config["defaults"], dict)
        assert isinstance(config["overrides"], list)
        defaults = config["defaults"]
        if "color" in defaults:
            assert defaults["color"]["mode"] in COLOR_MODES
        if "thresholds" in defaults:
            thresholds = defaults["thresholds"]
            assert thresholds["mode"] in ("absolute", "percentage")
            steps = thresholds["steps"]
            assert steps[0]["value"] is None  # the first step is -Infinity
            values = [s["value"] for s in steps[1:]]
            assert values == sorted(values)
            assert all(isinstance(s["color"], str) for s in steps)
        for key in ("min", "max", "decimals"):
            assert isinstance(defaults.get(key, 0), int | float)
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE_REF
            assert isinstance(target["expr"], str)
            assert target["expr"]
            assert isinstance(target.get("exemplar", False), bool)
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_the_grid_fits_24_columns_without_overlaps(dashboard: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in _dashboard_panels(dashboard):
        grid = panel["gridPos"]
        h, w, x, y = grid["h"], grid["w"], grid["x"], grid["y"]
        assert all(_uint(v) for v in (h, w, x, y)), grid
        assert h > 0, (panel["title"], grid)
        assert 0 < w <= 24, (panel["title"], grid)
        assert x + w <= 24, (panel["title"], grid)
        for row in range(y, y + h):
            for column in range(x, x + w):
                other = cells.setdefault((row, column), panel["title"])
                assert other == panel["title"], f"{panel['title']!r} overlaps {other!r}"


def test_one_prometheus_datasource_variable_that_everything_refers_to(
    dashboard: dict[str, Any],
) -> None:
    variables = dashboard["templating"]["list"]
    names = [v["name"] for v in variables]
    assert len(names) == len(set(names))
    for variable in variables:
        assert variable["type"] in VARIABLE_TYPES
        assert variable["hide"] in (0, 1, 2)
        assert isinstance(variable["skipUrlSync"], bool)
    (source,) = [v for v in variables if v["type"] == "datasource"]
    assert source["name"] == "datasource"
    assert source["query"] == "prometheus"  # any Prometheus data source: no fixed uid
    assert not source["multi"]
    assert not source["includeAll"]
    for variable in variables:
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE_REF
            assert variable["refresh"] in (1, 2)  # on load / on time range change
            if variable["includeAll"]:
                assert variable["allValue"] == ".*"


@pytest.mark.parametrize("field", ["panels", "templating", "annotations", "time", "title", "uid"])
def test_the_model_s_sections_are_present(dashboard: dict[str, Any], field: str) -> None:
    assert field in dashboard


def test_latency_panels_ask_for_exemplars(dashboard: dict[str, Any]) -> None:
    latency = [p for p in _dashboard_panels(dashboard) if "p50 / p95 / p99" in p["title"]]
    assert len(latency) == 3  # persistence, command and query durations
    for panel in latency:
        assert all(t.get("exemplar") is True for t in panel["targets"]), panel["title"]


def test_the_prometheus_data_source_links_exemplars_to_jaeger(dashboards_dir: Path) -> None:
    provisioning = dashboards_dir / "grafana/provisioning/datasources/datasources.yaml"
    sources = {s["name"]: s for s in yaml.safe_load(provisioning.read_text())["datasources"]}
    jaeger, prometheus = sources["Jaeger"], sources["Prometheus"]
    assert jaeger["type"] == "jaeger"
    (destination,) = prometheus["jsonData"]["exemplarTraceIdDestinations"]
    assert destination["name"] == "trace_id"  # the exemplar label the demo serves
    assert destination["datasourceUid"] == jaeger["uid"]
    for compose in ("docker-compose.yml", "docker-compose.host-network.yml"):
        text = (dashboards_dir / compose).read_text()
        assert "--enable-feature=exemplar-storage" in text, compose
