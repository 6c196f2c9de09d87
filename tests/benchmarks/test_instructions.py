"""``benchmarks.instructions``' WAL page count: what a commit appends to SQLite's log.

Each count runs in a process of its own: the benchmark configures structlog for
the whole process (filtered JSON), which must not leak into other tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]


def _wal_pages(case: str) -> float:
    code = f"from benchmarks.instructions import wal_pages; print(wal_pages('NORMAL', {case!r}))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=100
    )
    assert done.returncode == 0, done.stderr
    return float(done.stdout.strip().splitlines()[-1])


def test_a_persisted_command_appends_no_page_more_than_raw_sqlite3_writing_its_rows() -> None:
    # Raw sqlite3 writes the same event, outbox and state rows into the library's own
    # tables: any page more on our side would be an index or a write the rows do not need.
    ours = _wal_pages("ours")
    raw = _wal_pages("raw_sqlite3")
    assert raw >= 3  # three rows in three tables: at least a page each
    assert ours <= raw


def test_eventsourcing_one_row_commit_appends_fewer_pages() -> None:
    assert 1 <= _wal_pages("eventsourcing") < _wal_pages("raw_sqlite3")
