"""Fixtures for the dashboard tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

DASHBOARDS = REPO_ROOT / "dashboards"
DASHBOARD_JSON = DASHBOARDS / "grafana" / "persistence-latency.json"


@pytest.fixture(scope="session")
def dashboards_dir() -> Path:
    return DASHBOARDS


@pytest.fixture(scope="session")
def dashboard_path() -> Path:
    return DASHBOARD_JSON


@pytest.fixture(scope="session")
def dashboard(dashboard_path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(dashboard_path.read_text())
    return loaded
