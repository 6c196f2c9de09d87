"""``benchmarks.instructions``' WAL page count: what a commit appends to SQLite's log."""

from __future__ import annotations

import pytest
from benchmarks.instructions import wal_pages

pytestmark = pytest.mark.timeout(120)


def test_a_persisted_command_appends_no_page_more_than_raw_sqlite3_writing_its_rows() -> None:
    # Raw sqlite3 writes the same event, outbox and state rows into the library's own
    # tables: any page more on our side would be an index or a write the rows do not need.
    ours = wal_pages("NORMAL", "ours")
    raw = wal_pages("NORMAL", "raw_sqlite3")
    assert raw >= 3  # three rows in three tables: at least a page each
    assert ours <= raw


def test_eventsourcing_one_row_commit_appends_fewer_pages() -> None:
    assert 1 <= wal_pages("NORMAL", "eventsourcing") < wal_pages("NORMAL", "raw_sqlite3")
