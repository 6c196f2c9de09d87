"""The same writes with no library: raw ``sqlite3``, raw ``aiosqlite``, raw ``asyncpg``.

Per command, in one transaction: one event row, one outbox row and one
aggregate state row, in the adapters' own tables (created from their
``MetaData``, so the rows, indexes and constraints are the same). Each
baseline builds what the library would have to build anyway: fresh ids, the
event payload and aggregate state as JSON text, UTC timestamps. It does no
version check and takes no lock: it is the floor, not a correct event store.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from benchmarks.latency import Latencies

__all__ = [
    "PG_INSERTS",
    "SQLITE_INSERTS",
    "aiosqlite_sender",
    "asyncpg_sender",
    "command_rows",
    "create_schema_sqlite",
    "sqlite3_sender",
]

_EVENT_COLUMNS = (
    "event_id",
    "aggregate_type",
    "aggregate_id",
    "version",
    "event_type",
    "schema_version",
    "payload",
    "metadata",
    "occurred_at",
    "recorded_at",
    "correlation_id",
    "causation_id",
)
_OUTBOX_COLUMNS = (
    "message_id",
    "message_type",
    "payload",
    "aggregate_type",
    "aggregate_id",
    "status",
    "attempts",
    "created_at",
    "correlation_id",
    "causation_id",
    "trace_context",
)
_STATE_COLUMNS = ("aggregate_type", "aggregate_id", "version", "state", "updated_at")


def _inserts(placeholder: Callable[[int], str]) -> tuple[str, str, str]:
    def one(table: str, columns: tuple[str, ...]) -> str:
        marks = ", ".join(placeholder(i) for i in range(1, len(columns) + 1))
        return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"

    return (
        one("events", _EVENT_COLUMNS),
        one("outbox", _OUTBOX_COLUMNS),
        one("aggregate_state", _STATE_COLUMNS),
    )


SQLITE_INSERTS = _inserts(lambda _: "?")
PG_INSERTS = _inserts(lambda i: f"${i}")


def _sqlite_time(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")  # as SQLAlchemy stores DATETIME on SQLite


def command_rows(
    aggregate_id: str, *, sqlite: bool
) -> tuple[tuple[Any, ...], tuple[Any, ...], tuple[Any, ...]]:
    """The event, outbox and state rows of one "open account" command."""
    now = datetime.now(UTC)
    stamp: Any = _sqlite_time(now) if sqlite else now
    event_id = str(uuid.uuid4())
    correlation_id = str(uuid.uuid4())
    payload = json.dumps({"owner": "alice", "balance": 100}, separators=(",", ":"))
    state = json.dumps(
        {"id": aggregate_id, "version": 1, "owner": "alice", "balance": 100},
        separators=(",", ":"),
    )
    event = (
        event_id,
        "Account",
        aggregate_id,
        1,
        "AccountOpened",
        1,
        payload,
        "{}",
        stamp,
        stamp,
        correlation_id,
        correlation_id,
    )
    outbox = (
        event_id,
        "AccountOpened",
        payload,
        "Account",
        aggregate_id,
        "pending",
        0,
        stamp,
        correlation_id,
        correlation_id,
        "{}",
    )
    return event, outbox, ("Account", aggregate_id, 1, state, stamp)


def create_schema_sqlite(path: str, synchronous: str) -> None:
    """Create the adapters' tables in ``path`` (WAL) with SQLAlchemy's DDL."""
    from sqlalchemy import create_engine, event

    from cqrs_ddd_core.adapters.sqlalchemy import metadata

    engine = create_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA journal_mode=WAL")
        dbapi_connection.execute(f"PRAGMA synchronous={synchronous}")

    metadata.create_all(engine)
    engine.dispose()


def sqlite3_sender(path: str, synchronous: str, prefix: str) -> Callable[[int], Awaitable[None]]:
    """``run(n)``: ``n`` commands through a raw ``sqlite3`` connection, blocking."""
    create_schema_sqlite(path, synchronous)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    ins_event, ins_outbox, ins_state = SQLITE_INSERTS
    counter = itertools.count(1)

    async def run(n: int) -> None:
        execute = conn.execute
        for _ in range(n):
            event, outbox, state = command_rows(f"{prefix}-{next(counter)}", sqlite=True)
            execute("BEGIN IMMEDIATE")
            try:
                execute(ins_event, event)
                execute(ins_outbox, outbox)
                execute(ins_state, state)
            except BaseException:
                execute("ROLLBACK")
                raise
            execute("COMMIT")

    return run


async def aiosqlite_sender(
    path: str, synchronous: str, prefix: str
) -> tuple[Callable[[int], Awaitable[None]], Callable[[], Awaitable[None]]]:
    """``run(n)`` through ``aiosqlite`` (each statement a hop to its thread), and ``close``."""
    import aiosqlite

    create_schema_sqlite(path, synchronous)
    db = await aiosqlite.connect(path, isolation_level=None)
    await db.execute("PRAGMA journal_mode=WAL")
    await db.execute(f"PRAGMA synchronous={synchronous}")
    ins_event, ins_outbox, ins_state = SQLITE_INSERTS
    counter = itertools.count(1)

    async def run(n: int) -> None:
        for _ in range(n):
            event, outbox, state = command_rows(f"{prefix}-{next(counter)}", sqlite=True)
            await db.execute("BEGIN IMMEDIATE")
            try:
                await db.execute(ins_event, event)
                await db.execute(ins_outbox, outbox)
                await db.execute(ins_state, state)
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            await db.execute("COMMIT")

    return run, db.close


def asyncpg_sender(
    pool: Any,
    prefix: str,
    *,
    senders: int,
    lock_key: int | None = None,
    latencies: Latencies | None = None,
) -> Callable[[int], Awaitable[None]]:
    """``run(n)``: ``n`` commands over ``senders`` concurrent asyncpg connections.

    Each command is ``BEGIN``, three ``INSERT`` s and ``COMMIT`` (five round
    trips, the plain way to write it). With ``lock_key`` the transaction also
    takes a transaction-scoped advisory lock right before ``COMMIT``, so it is
    held for one round trip and the commit: what serialising commits costs by
    itself (the design the library's adapter rejected for that cost). With
    ``latencies``, every command is timed from building its rows to the end of
    its ``COMMIT``.
    """
    import asyncio
    import time

    clock = time.perf_counter_ns

    ins_event, ins_outbox, ins_state = PG_INSERTS
    counter = itertools.count(1)

    async def one(conn: Any) -> None:
        event, outbox, state = command_rows(f"{prefix}-{next(counter)}", sqlite=False)
        async with conn.transaction():
            await conn.execute(ins_event, *event)
            await conn.execute(ins_outbox, *outbox)
            await conn.execute(ins_state, *state)
            if lock_key is not None:
                await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key)

    async def worker(share: int) -> None:
        async with pool.acquire() as conn:
            if latencies is None:
                for _ in range(share):
                    await one(conn)
                return
            for _ in range(share):
                start = clock()
                await one(conn)
                latencies.record(clock() - start)

    async def run(n: int) -> None:
        shares = [n // senders + (1 if i < n % senders else 0) for i in range(senders)]
        await asyncio.gather(*(worker(s) for s in shares if s))

    return run
