"""``cqrs-ddd demo`` end to end, as a subprocess: SQLite by default, PostgreSQL on request.

Each run's JSON summary is compared with the rows of the database, read with plain SQL.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.cli.db_checks import EVENT_SOURCED, read_contents, read_sqlite
from tests.cli.demo_process import run_demo

COMMANDS = 160


def _summary(completed: Any) -> dict[str, Any]:
    assert completed.returncode == 0, completed.stderr[-4000:]
    summary: dict[str, Any] = json.loads(completed.stdout)
    return summary


def _assert_summary_is_whole(summary: dict[str, Any], commands: int) -> None:
    assert summary["commands"] == commands
    assert not summary["interrupted"]
    assert summary["succeeded"] + sum(summary["errors_by_type"].values()) == commands
    assert sum(summary["commands_by_type"].values()) == commands
    assert summary["commands_per_second"] > 0
    for figures in ("command_latency_s", "persistence_latency_s"):
        p50, p95, p99 = (summary[figures][name] for name in ("p50", "p95", "p99"))
        assert 0 < p50 <= p95 <= p99, (figures, summary[figures])
    check = summary["database_check"]
    assert check["integrity"]["ok"], check
    assert check["events_match"], check
    assert check["outbox_match"], check
    # Every event is an outbox message; the event-sourced ones are in the event store too.
    assert summary["outbox"]["by_aggregate_type"] == summary["outbox_enqueued_by_aggregate_type"]
    assert summary["events"]["by_aggregate_type"] == summary["events_stored_by_aggregate_type"]
    for aggregate_type in EVENT_SOURCED:
        assert (
            summary["events"]["by_aggregate_type"][aggregate_type]
            == summary["outbox"]["by_aggregate_type"][aggregate_type]
        )
    assert set(summary["events"]["by_aggregate_type"]) <= set(EVENT_SOURCED)
    assert summary["outbox"]["by_aggregate_type"].get("UserPreferences", 0) > 0


def test_the_demo_on_a_sqlite_file_reports_what_the_database_holds(tmp_path: Path) -> None:
    database = tmp_path / "shop.db"
    completed = run_demo(
        [f"-n={COMMANDS}", "-c=4", f"--database-url=sqlite:///{database}", "--json", "--seed=3"],
        cwd=tmp_path,
    )
    summary = _summary(completed)
    _assert_summary_is_whole(summary, COMMANDS)
    assert summary["database"] == {
        "dialect": "sqlite",
        "url": f"sqlite:///{database}",
        "fresh": False,
    }
    assert "Traceback" not in completed.stderr

    contents = read_sqlite(database)
    contents.assert_consistent()
    assert dict(contents.events) == summary["events"]["by_aggregate_type"]
    assert dict(contents.outbox) == summary["outbox"]["by_aggregate_type"]
    assert sum(contents.events.values()) == summary["events"]["total"]
    assert sum(contents.outbox.values()) == summary["outbox"]["total"]
    assert contents.event_types["InvoiceIssued"] > 0  # confirmations happened


def test_a_second_run_on_the_same_file_adds_to_it(tmp_path: Path) -> None:
    database = tmp_path / "shop.db"
    args = ["-n=60", "-c=3", f"--database-url=sqlite:///{database}", "--json"]
    first = _summary(run_demo(args, cwd=tmp_path))
    second = _summary(run_demo(args, cwd=tmp_path))
    _assert_summary_is_whole(second, 60)  # its own figures: the rows it added
    contents = read_sqlite(database)
    contents.assert_consistent()
    assert sum(contents.events.values()) == first["events"]["total"] + second["events"]["total"]


def test_without_a_url_the_demo_uses_a_fresh_sqlite_file_in_demo_data(tmp_path: Path) -> None:
    for _ in range(2):  # the second run starts from an empty file again
        summary = _summary(run_demo(["-n=40", "-c=2", "--json"], cwd=tmp_path))
        assert summary["database"]["fresh"] is True
        assert summary["database"]["url"] == "sqlite+aiosqlite:///demo-data/demo.db"
        contents = read_sqlite(tmp_path / "demo-data" / "demo.db")
        assert dict(contents.outbox) == summary["outbox"]["by_aggregate_type"]


def test_the_summary_table_without_a_terminal_has_no_progress_bar(tmp_path: Path) -> None:
    completed = run_demo(
        ["-n=80", "-c=4", f"--database-url=sqlite:///{tmp_path / 'd.db'}"], cwd=tmp_path
    )
    assert completed.returncode == 0, completed.stderr
    out = completed.stdout
    for row in (
        "cqrs-ddd demo: sqlite",
        "commands",
        "/s with 4 senders",
        "command latency",
        "persistence latency",
        "p50",
        "p95",
        "p99",
        "events stored",
        "outbox enqueued",
        "conflicts",
        "errors",
        "database check",
    ):
        assert row in out, f"{row!r} not in:\n{out}"
    assert "✓ database" in out
    assert "\x1b[" not in out + completed.stderr  # no colours, no progress bar redraws
    assert completed.stderr == ""  # default log level: warnings only, and there are none


@pytest.mark.postgres
async def test_the_demo_on_postgresql(
    tmp_path: Path, pg_engine: Any, postgres_database_url: str
) -> None:
    # pg_engine emptied the session database's tables; the demo adds to them.
    completed = run_demo(
        [f"-n={COMMANDS}", "-c=6", f"--database-url={postgres_database_url}", "--json"],
        cwd=tmp_path,
    )
    summary = _summary(completed)
    _assert_summary_is_whole(summary, COMMANDS)
    assert summary["database"]["dialect"] == "postgresql"
    contents = await read_contents(pg_engine)
    contents.assert_consistent()
    assert dict(contents.events) == summary["events"]["by_aggregate_type"]
    assert dict(contents.outbox) == summary["outbox"]["by_aggregate_type"]
