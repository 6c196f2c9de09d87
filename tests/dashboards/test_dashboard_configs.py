"""Prometheus, OpenTelemetry Collector, Grafana provisioning and compose files of dashboards/.

Docker cannot run here: the compose and collector files are checked for structure
(every referenced file exists, every pipeline component is defined, the ports line up);
the Prometheus configs go through the real ``promtool check config``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.prometheus import find_binary

PROMETHEUS_CONFIGS = ["prometheus/prometheus.yml", "prometheus/prometheus.compose.yml"]


class _ComposeLoader(yaml.SafeLoader):
    """Safe YAML plus Compose's merge tags (``!reset``, ``!override``)."""


def _compose_tag(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node)
    return loader.construct_scalar(node)


_ComposeLoader.add_constructor("!reset", _compose_tag)
_ComposeLoader.add_constructor("!override", _compose_tag)


def _load(path: Path) -> Any:
    with path.open() as handle:
        return yaml.load(handle, Loader=_ComposeLoader)


def _targets(config: dict[str, Any]) -> dict[str, list[str]]:
    return {
        job["job_name"]: [t for static in job["static_configs"] for t in static["targets"]]
        for job in config["scrape_configs"]
    }


@pytest.mark.parametrize("relative", PROMETHEUS_CONFIGS)
def test_promtool_accepts_the_prometheus_config(dashboards_dir: Path, relative: str) -> None:
    promtool = find_binary("promtool")
    completed = subprocess.run(
        [promtool, "check", "config", str(dashboards_dir / relative)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "SUCCESS" in completed.stdout + completed.stderr


def test_the_host_config_scrapes_the_demo_on_its_default_port(dashboards_dir: Path) -> None:
    targets = _targets(_load(dashboards_dir / "prometheus/prometheus.yml"))
    assert targets["cqrs-ddd-demo"] == ["127.0.0.1:9464"]
    assert targets["otel-collector"] == ["127.0.0.1:8889"]


def test_the_compose_config_scrapes_the_host_and_the_collector(dashboards_dir: Path) -> None:
    host = _load(dashboards_dir / "prometheus/prometheus.yml")
    compose = _load(dashboards_dir / "prometheus/prometheus.compose.yml")
    targets = _targets(compose)
    assert targets["cqrs-ddd-demo"] == ["host.docker.internal:9464"]
    assert targets["otel-collector"] == ["otel-collector:8889"]
    # the dashboard's $__rate_interval relies on one scrape interval everywhere
    assert compose["global"]["scrape_interval"] == host["global"]["scrape_interval"]


def test_the_collector_takes_otlp_in_and_sends_traces_to_jaeger_and_metrics_to_prometheus(
    dashboards_dir: Path,
) -> None:
    config = _load(dashboards_dir / "otel-collector/config.yaml")
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"].endswith(":4317")
    assert protocols["http"]["endpoint"].endswith(":4318")
    pipelines = config["service"]["pipelines"]
    assert pipelines["traces"]["receivers"] == ["otlp"]
    assert pipelines["metrics"]["receivers"] == ["otlp"]
    trace_exporters = pipelines["traces"]["exporters"]
    assert any(config["exporters"][name]["endpoint"] == "jaeger:4317" for name in trace_exporters)
    assert pipelines["metrics"]["exporters"] == ["prometheus"]
    assert config["exporters"]["prometheus"]["endpoint"].endswith(":8889")
    # every component a pipeline names is defined, and every defined one is used
    for kind in ("receivers", "processors", "exporters"):
        used = {name for pipeline in pipelines.values() for name in pipeline.get(kind, [])}
        assert used <= set(config[kind]), (kind, used - set(config[kind]))
        assert set(config[kind]) <= used, (kind, set(config[kind]) - used)
    assert set(config["service"].get("extensions", [])) <= set(config.get("extensions", {}))
    for pipeline in pipelines.values():
        if "memory_limiter" in pipeline.get("processors", []):
            assert pipeline["processors"][0] == "memory_limiter"


def _host_path(dashboards_dir: Path, volume: str) -> tuple[Path, str] | None:
    source, target = volume.split(":")[:2]
    if not source.startswith("."):
        return None  # a named volume
    return (dashboards_dir / source).resolve(), target


def test_compose_runs_the_four_services_with_existing_files(dashboards_dir: Path) -> None:
    compose = _load(dashboards_dir / "docker-compose.yml")
    services = compose["services"]
    assert {"prometheus", "grafana", "otel-collector", "jaeger"} <= set(services)
    for name, service in services.items():
        assert ":" in service["image"], f"{name}: pin the image version"
        assert not service["image"].endswith(":latest"), f"{name}: pin the image version"
        for volume in service.get("volumes", []):
            mount = _host_path(dashboards_dir, volume)
            if mount is not None:
                assert mount[0].exists(), f"{name} mounts missing {mount[0]}"
    prometheus = services["prometheus"]
    assert "host.docker.internal:host-gateway" in prometheus["extra_hosts"]
    mounts = dict(
        m for v in prometheus["volumes"] if (m := _host_path(dashboards_dir, v)) is not None
    )
    assert mounts[(dashboards_dir / "prometheus/prometheus.compose.yml").resolve()] == (
        "/etc/prometheus/prometheus.yml"
    )
    collector_ports = {p.split(":")[-1] for p in services["otel-collector"]["ports"]}
    assert {"4317", "4318", "8889"} <= collector_ports
    collector_mounts = [
        m for v in services["otel-collector"]["volumes"] if (m := _host_path(dashboards_dir, v))
    ]
    (config_target,) = [t for s, t in collector_mounts if s.name == "config.yaml"]
    assert any(config_target in arg for arg in services["otel-collector"]["command"])


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard(dashboards_dir: Path) -> None:
    compose = _load(dashboards_dir / "docker-compose.yml")
    grafana = compose["services"]["grafana"]
    mounts = dict(m for v in grafana["volumes"] if (m := _host_path(dashboards_dir, v)) is not None)
    dashboard_json = (dashboards_dir / "grafana/persistence-latency.json").resolve()
    assert dashboard_json in mounts

    datasources_dir = dashboards_dir / "grafana/provisioning/datasources"
    dashboards_dir_prov = dashboards_dir / "grafana/provisioning/dashboards"
    assert mounts[datasources_dir.resolve()] == "/etc/grafana/provisioning/datasources"
    assert mounts[dashboards_dir_prov.resolve()] == "/etc/grafana/provisioning/dashboards"

    datasources = [
        ds for f in sorted(datasources_dir.glob("*.yaml")) for ds in _load(f)["datasources"]
    ]
    (prometheus,) = [ds for ds in datasources if ds["type"] == "prometheus"]
    assert prometheus["isDefault"] is True  # what ${datasource} resolves to
    assert prometheus["url"] == "${PROMETHEUS_URL}"
    assert grafana["environment"]["PROMETHEUS_URL"] == "http://prometheus:9090"
    host = _load(dashboards_dir / "prometheus/prometheus.yml")
    assert prometheus["jsonData"]["timeInterval"] == host["global"]["scrape_interval"]

    providers = [
        p for f in sorted(dashboards_dir_prov.glob("*.yaml")) for p in _load(f)["providers"]
    ]
    (provider,) = providers
    assert provider["type"] == "file"
    assert mounts[dashboard_json].startswith(provider["options"]["path"].rstrip("/") + "/")


def test_the_linux_override_runs_prometheus_on_the_host_network(dashboards_dir: Path) -> None:
    override = _load(dashboards_dir / "docker-compose.host-network.yml")["services"]
    assert override["prometheus"]["network_mode"] == "host"
    assert override["prometheus"]["ports"] == []
    mounts = dict(
        m for v in override["prometheus"]["volumes"] if (m := _host_path(dashboards_dir, v))
    )
    # the host variant scrapes 127.0.0.1, where the demo listens
    assert mounts[(dashboards_dir / "prometheus/prometheus.yml").resolve()] == (
        "/etc/prometheus/prometheus.yml"
    )
    assert (
        override["grafana"]["environment"]["PROMETHEUS_URL"] == "http://host.docker.internal:9090"
    )


def test_the_readme_documents_the_stack(dashboards_dir: Path) -> None:
    readme = (dashboards_dir / "README.md").read_text()
    for needle in (
        "docker compose up",
        "--metrics-port 9464",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "promtool check config",
        "docker-compose.host-network.yml",
        "http://localhost:3000",
        "http://localhost:16686",
    ):
        assert needle in readme, needle
