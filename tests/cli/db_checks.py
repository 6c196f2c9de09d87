"""What a database holds after a demo run, read with plain SQL (not through the demo's code)."""

from __future__ import annotations

import sqlite3
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["EVENT_SOURCED", "Contents", "read_contents", "read_sqlite"]

EVENT_SOURCED = ("Order", "Invoice")


@dataclass(frozen=True)
class Contents:
    events: Counter[str]
    event_types: Counter[str]
    outbox: Counter[str]
    streams: dict[tuple[str, str], list[int]]
    event_ids: set[str]
    outbox_ids: dict[str, str]  # message id -> aggregate type
    states: dict[str, int]  # UserPreferences id -> version
    outbox_per_user: Counter[str]

    def assert_consistent(self) -> None:
        """Nothing half written: streams 1..n, events and outbox rows in step, states too."""
        for stream, versions in self.streams.items():
            assert versions == list(range(1, len(versions) + 1)), (stream, versions)
        assert set(self.events) <= set(EVENT_SOURCED), self.events
        # Confirming an order issues its invoice in the same transaction: never one alone.
        assert self.event_types["OrderConfirmed"] == self.event_types["InvoiceIssued"]
        missing_messages = self.event_ids - set(self.outbox_ids)
        assert not missing_messages, f"{len(missing_messages)} events without an outbox message"
        orphans = {
            message_id
            for message_id, aggregate_type in self.outbox_ids.items()
            if aggregate_type in EVENT_SOURCED and message_id not in self.event_ids
        }
        assert not orphans, f"{len(orphans)} outbox messages without their event"
        for user, version in self.states.items():
            assert version == self.outbox_per_user[user], (user, version)


def _contents(rows: dict[str, list[tuple[Any, ...]]]) -> Contents:
    streams: dict[tuple[str, str], list[int]] = {}
    for aggregate_type, aggregate_id, version, _type in rows["streams"]:
        streams.setdefault((aggregate_type, aggregate_id), []).append(int(version))
    return Contents(
        events=Counter(t for t, _i, _v, _e in rows["streams"]),
        event_types=Counter(e for _t, _i, _v, e in rows["streams"]),
        outbox=Counter(t for _m, t, _i in rows["outbox"]),
        streams=streams,
        event_ids={e for (e,) in rows["event_ids"]},
        outbox_ids={m: t for m, t, _i in rows["outbox"]},
        states={i: int(v) for i, v in rows["states"]},
        outbox_per_user=Counter(i for _m, t, i in rows["outbox"] if t == "UserPreferences"),
    )


QUERIES = {
    "streams": "SELECT aggregate_type, aggregate_id, version, event_type FROM events "
    "ORDER BY aggregate_type, aggregate_id, version",
    "event_ids": "SELECT event_id FROM events",
    "outbox": "SELECT message_id, aggregate_type, aggregate_id FROM outbox",
    "states": "SELECT aggregate_id, version FROM aggregate_state "
    "WHERE aggregate_type = 'UserPreferences'",
}


def read_sqlite(path: Path) -> Contents:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return _contents({name: conn.execute(sql).fetchall() for name, sql in QUERIES.items()})


async def read_contents(engine: Any) -> Contents:
    """The same through an ``AsyncEngine`` (PostgreSQL)."""
    rows: dict[str, list[tuple[Any, ...]]] = {}
    async with engine.connect() as conn:
        for name, sql in QUERIES.items():
            result = await conn.exec_driver_sql(sql)
            rows[name] = [tuple(row) for row in result.all()]
    return _contents(rows)
