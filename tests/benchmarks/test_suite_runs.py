"""Smoke tests of the benchmark suite: its workloads run and it reports well-formed JSON.

The suite runs once with ``--quick --rounds 1`` (tiny counts): the figures
mean nothing and nothing here asserts a timing or a target verdict, only
that every workload ran (or says why it could not) and that the summary on
the last line holds every case, ratio and target in the documented shape.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# The module's fixture runs the whole quick suite (its own bound: 240 s) inside
# the first test's time: that test needs more than the default 120 s.
pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
WORKLOADS = (
    "dispatch",
    "default_pipeline",
    "observability",
    "sqlite",
    "postgres",
    "memory",
    "snapshots",
    "messaging",
    "sqlite_concurrent",
    "postgres_64",
)

# What each workload needs beyond the project itself (the bench extra).
NEEDS = {
    "dispatch": ("cqrs",),
    "default_pipeline": ("cqrs",),
    "observability": (
        "sqlalchemy",
        "aiosqlite",
        "opentelemetry.sdk",
        "eventsourcing",
        "opentelemetry.instrumentation.sqlite3",
    ),
    "sqlite": ("sqlalchemy", "aiosqlite", "eventsourcing"),
    "postgres": ("sqlalchemy", "asyncpg", "eventsourcing", "psycopg"),
    "memory": ("sqlalchemy", "aiosqlite", "opentelemetry.sdk"),
    "snapshots": ("sqlalchemy", "aiosqlite"),
    "messaging": ("sqlalchemy", "asyncpg", "aio_pika"),
    "sqlite_concurrent": ("sqlalchemy", "aiosqlite", "eventsourcing"),
    "postgres_64": ("sqlalchemy", "asyncpg"),
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _postgres_available() -> bool:
    if os.environ.get("CQRS_BENCH_POSTGRES_URL"):
        return True
    from tests.support.postgres import find_bindir

    return find_bindir() is not None


def _rabbitmq_available() -> bool:
    if os.environ.get("CQRS_BENCH_RABBITMQ_URL"):
        return True
    from tests.support.rabbitmq import SERVER

    return SERVER.is_file()


def _expected_to_run(name: str) -> bool:
    if not all(_installed(m) for m in NEEDS[name]):
        return False
    if name == "messaging":
        return _postgres_available() and _rabbitmq_available()
    return name not in ("postgres", "postgres_64") or _postgres_available()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    """The summary (last stdout line, parsed) and the whole stdout of one quick run."""
    workdir = tmp_path_factory.mktemp("bench")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--rounds", "1", "--workdir", str(workdir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    last = done.stdout.rstrip("\n").rsplit("\n", 1)[-1]
    return json.loads(last), done.stdout


def test_the_last_line_is_one_json_object_with_every_workload(
    run: tuple[dict[str, Any], str],
) -> None:
    summary, _ = run
    assert summary["suite"] == "cqrs-ddd-bench"
    assert summary["quick"] is True
    assert set(summary["workloads"]) == set(WORKLOADS)
    assert {"python", "cpus"} <= set(summary["machine"])
    counted = summary["targets_met"] + summary["targets_missed"] + summary["targets_not_run"]
    assert counted == sum(len(w["targets"]) for w in summary["workloads"].values())
    assert summary["all_met"] in (True, False)


@pytest.mark.parametrize("name", WORKLOADS)
def test_each_workload_runs_and_reports_its_cases_ratios_and_targets(
    run: tuple[dict[str, Any], str], name: str
) -> None:
    workload = run[0]["workloads"][name]
    if not _expected_to_run(name):
        assert workload["status"] in ("skipped", "error"), workload
        assert workload["reason"]
        return
    assert workload["status"] == "ok", workload.get("reason")
    assert workload["targets"], "every workload checks at least one promise"
    for target in workload["targets"].values():
        assert target["op"] in (">=", "<=")
        assert isinstance(target["value"], int | float)
        assert target["met"] in (True, False)
    for case in workload.get("cases", {}).values():
        assert 0 < case["min_us"] <= case["median_us"] <= case["max_us"]
        assert case["ops_per_s"] > 0
        assert case["rounds"] == 1
    for value in workload.get("ratios", {}).values():
        assert value["value"] > 0
        assert value["numerator"] in workload["cases"]
        assert value["denominator"] in workload["cases"]


def test_the_tables_are_printed_before_the_summary(run: tuple[dict[str, Any], str]) -> None:
    summary, stdout = run
    for name, workload in summary["workloads"].items():
        if workload["status"] == "ok":
            assert workload["title"] in stdout, name


def test_the_postgres_reader_saw_every_event_in_order(run: tuple[dict[str, Any], str]) -> None:
    workload = run[0]["workloads"]["postgres"]
    if workload["status"] != "ok":
        pytest.skip(f"postgres workload did not run: {workload.get('reason')}")
    check = workload["figures"]["reader_check"]
    assert check["events_seen"] == check["events_written"] > 0


def test_the_messaging_latency_is_judged_on_the_median_run(
    run: tuple[dict[str, Any], str],
) -> None:
    workload = run[0]["workloads"]["messaging"]
    if not _expected_to_run("messaging"):
        pytest.skip("the messaging workload needs PostgreSQL and RabbitMQ")
    figures = workload["figures"]
    runs = figures["runs_at_rate"]
    assert len(runs) == 1  # --quick: one run at 500/s (three otherwise)
    assert figures["commit_to_consumer_p50_ms"] == runs[0]["p50_ms"] > 0
    assert figures["latency_run"]["consumed"] == figures["latency_run"]["commands"]
