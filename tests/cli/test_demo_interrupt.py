"""Ctrl-C stops the demo cleanly: in-flight commands roll back, nothing is half written.

The demo runs in a subprocess on a SQLite file with far more commands than it can send
before the signal; once events are in the database it gets SIGINT (as Ctrl-C sends).
It must exit with 130 after printing a partial summary, and the database must be whole:
every stream 1..n, every event with its outbox message and every outbox message of an
event-sourced type with its event, every preferences state in step with its messages.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import pytest

from tests.cli.db_checks import read_sqlite
from tests.cli.demo_process import DemoProcess

pytestmark = pytest.mark.slow


def _wait_for_events(database: Path, demo: DemoProcess, at_least: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if demo.process.poll() is not None:
            pytest.fail(f"the demo ended early ({demo.process.returncode}):\n{demo.stderr()}")
        if database.exists():
            try:
                with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1) as conn:
                    (count,) = conn.execute("SELECT count(*) FROM events").fetchone()
            except sqlite3.OperationalError:  # tables not created yet
                count = 0
            if count >= at_least:
                return
        time.sleep(0.1)
    pytest.fail(f"no events after {timeout}s:\n{demo.stderr()}")


@pytest.mark.parametrize("output", ["json", "table"])
def test_ctrl_c_stops_cleanly_with_a_partial_summary(tmp_path: Path, output: str) -> None:
    database = tmp_path / "shop.db"
    args = ["-n=1000000", "-c=8", f"--database-url=sqlite:///{database}", "--no-progress"]
    demo = DemoProcess(
        [*args, "--json"] if output == "json" else args, cwd=tmp_path, log_path=tmp_path / "err"
    )
    try:
        _wait_for_events(database, demo, at_least=50, timeout=120)
        demo.send_signal(signal.SIGINT)
        code = demo.wait(timeout=60)
    finally:
        demo.stop()
    stderr = demo.stderr()
    assert code == 130, stderr
    assert "Traceback" not in stderr
    assert "SIGINT: stopped after" in stderr

    contents = read_sqlite(database)
    contents.assert_consistent()
    if output == "table":
        assert "(interrupted:" in demo.stdout
        assert "database check" in demo.stdout
        return
    summary = demo.summary()
    assert summary is not None, demo.stdout
    assert summary["interrupted"] is True
    assert 0 < summary["commands"] < 1_000_000
    assert summary["database_check"]["integrity"]["ok"]
    # What the summary counted committed; a command cancelled inside its commit may have
    # committed whole without being counted, so the database has at least as much.
    assert summary["database_check"]["events"] == sum(contents.events.values())
    for aggregate_type, counted in summary["events"]["by_aggregate_type"].items():
        assert contents.events[aggregate_type] >= counted
    for aggregate_type, counted in summary["outbox"]["by_aggregate_type"].items():
        assert contents.outbox[aggregate_type] >= counted


def test_sigterm_during_the_workload_stops_cleanly_too(tmp_path: Path) -> None:
    database = tmp_path / "shop.db"
    demo = DemoProcess(
        ["-n=1000000", f"--database-url=sqlite:///{database}", "--json"],
        cwd=tmp_path,
        log_path=tmp_path / "err",
    )
    try:
        _wait_for_events(database, demo, at_least=20, timeout=120)
        demo.send_signal(signal.SIGTERM)
        code = demo.wait(timeout=60)
    finally:
        demo.stop()
    assert code == 128 + signal.SIGTERM, demo.stderr()
    read_sqlite(database).assert_consistent()
    summary = demo.summary()
    assert summary is not None
    assert summary["interrupted"] is True


def test_the_audit_never_calls_a_committed_command_rolled_back(tmp_path: Path) -> None:
    database = tmp_path / "shop.db"
    demo = DemoProcess(
        ["-n=1000000", "-c=8", f"--database-url=sqlite:///{database}", "--json"],
        cwd=tmp_path,
        log_path=tmp_path / "err",
    )
    try:
        _wait_for_events(database, demo, at_least=300, timeout=120)
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=60) == 130
    finally:
        demo.stop()
    with sqlite3.connect(database) as conn:
        (contradictions,) = conn.execute(
            "SELECT count(*) FROM audit_log a WHERE a.outcome <> 'success' "
            "AND EXISTS (SELECT 1 FROM events e WHERE e.causation_id = a.message_id)"
        ).fetchone()
    assert contradictions == 0
