"""eventsourcing (the Python library) set up as its docs say: an ``Application``
whose aggregate is created by a command method; persistence chosen through
its environment (``PERSISTENCE_MODULE``).

One command = ``app.save(Account(...))``: the aggregate's ``Created`` event
is written to its ``stored_events`` table, which is also its notification
log (a global order, read by its ``ProcessApplication`` s). It writes no
outbox row and no state row; the comparison gives it that advantage.

SQLite (``eventsourcing.sqlite``): it always switches the file to WAL and
leaves ``synchronous`` at SQLite's default, FULL. For the WAL + NORMAL
figures the bench sets ``PRAGMA synchronous=NORMAL`` on each connection
its pool opens.

Traced (workload 3): what a user adds to it to get traces, and only traces:
OpenTelemetry's sqlite3 auto-instrumentation on its connections (one
``CLIENT`` span per statement it executes) and one span per command around
its command method (``traced_sender``).

PostgreSQL (``eventsourcing.postgres``, psycopg 3): its writers take
``LOCK TABLE ... IN EXCLUSIVE MODE`` to keep notification ids in commit
order; concurrency comes from threads, one pooled connection each.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from benchmarks.latency import Latencies

__all__ = [
    "Account",
    "AccountsApp",
    "postgres_app",
    "sender",
    "sqlite_app",
    "sqlite_settings",
    "threaded_sender",
    "traced_sender",
    "traced_sqlite_app",
]


class Account(Aggregate):
    @event("Opened")
    def __init__(self, owner: str, balance: int) -> None:
        self.owner = owner
        self.balance = balance


class AccountsApp(Application[Any]):
    name = "Accounts"

    def open_account(self, owner: str, balance: int) -> Any:
        account = Account(owner, balance)
        self.save(account)
        return account.id


def sqlite_app(
    path: str, synchronous: str, wrap: Callable[[Any], Any] | None = None
) -> AccountsApp:
    """Its SQLite application on ``path``; ``wrap(sqlite3_connection)`` (if given)
    replaces each connection its pool holds or opens (instrumentation)."""
    app = AccountsApp(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": path})
    pool = app.recorder.datastore.pool  # type: ignore[attr-defined]
    pragma = f"PRAGMA synchronous={synchronous.upper()}"
    create = pool._create_connection

    def prepared(connection: Any) -> Any:
        connection._sqlite_conn.execute(pragma)
        if wrap is not None:
            connection._sqlite_conn = wrap(connection._sqlite_conn)
        return connection

    def create_with_pragma() -> Any:
        return prepared(create())

    pool._create_connection = create_with_pragma
    for idle in pool._pool:  # the ones it opened while creating its table
        prepared(idle)
    return app


def traced_sqlite_app(path: str, synchronous: str, tracer_provider: Any) -> AccountsApp:
    """:func:`sqlite_app` with OpenTelemetry's sqlite3 instrumentation on its connections.

    ``SQLite3Instrumentor.instrument_connection`` (the per-connection form of
    ``SQLite3Instrumentor().instrument()``, so that no other sqlite3 connection
    of the process, ours included, is traced), with ``tracer_provider``.
    """
    from opentelemetry.instrumentation.sqlite3 import SQLite3Instrumentor

    def instrument(connection: Any) -> Any:
        return SQLite3Instrumentor.instrument_connection(
            connection, tracer_provider=tracer_provider
        )

    return sqlite_app(path, synchronous, wrap=instrument)


def sqlite_settings(app: AccountsApp) -> dict[str, str]:
    """``journal_mode`` and ``synchronous`` as its writing connection reports them."""
    pool = app.recorder.datastore.pool  # type: ignore[attr-defined]
    connection = pool.get_connection(is_writer=True)
    try:
        raw = connection._sqlite_conn
        journal = str(raw.execute("PRAGMA journal_mode").fetchone()[0]).upper()
        level = int(raw.execute("PRAGMA synchronous").fetchone()[0])
    finally:
        pool.put_connection(connection)
    return {"journal_mode": journal, "synchronous": _SYNC_NAMES.get(level, str(level))}


_SYNC_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def postgres_app(
    *, host: str, port: int, user: str, password: str, dbname: str, pool_size: int
) -> AccountsApp:
    return AccountsApp(
        env={
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": dbname,
            "POSTGRES_HOST": host,
            "POSTGRES_PORT": str(port),
            "POSTGRES_USER": user,
            "POSTGRES_PASSWORD": password,
            "POSTGRES_POOL_SIZE": str(pool_size),
            "POSTGRES_MAX_OVERFLOW": "0",
        }
    )


def sender(
    app: AccountsApp, latencies: Latencies | None = None
) -> Callable[[int], Awaitable[None]]:
    """``run(n)``: ``n`` commands, sequential, blocking (as its API is synchronous).

    With ``latencies``, every command is timed from call to return.
    """
    open_account = app.open_account
    clock = time.perf_counter_ns

    async def run(n: int) -> None:
        if latencies is None:
            for _ in range(n):
                open_account("alice", 100)
            return
        for _ in range(n):
            start = clock()
            open_account("alice", 100)
            latencies.record(clock() - start)

    return run


def traced_sender(app: AccountsApp, tracer_provider: Any) -> Callable[[int], Awaitable[None]]:
    """``run(n)``: as :func:`sender`, each command in a span of its own (``INTERNAL``,
    current while it runs, so the statements' spans are its children)."""
    tracer = tracer_provider.get_tracer("bench.eventsourcing")
    open_account = app.open_account

    async def run(n: int) -> None:
        for _ in range(n):
            with tracer.start_as_current_span("command OpenAccount"):
                open_account("alice", 100)

    return run


def threaded_sender(
    app: AccountsApp, senders: int, latencies: Latencies | None = None
) -> tuple[Callable[[int], Awaitable[None]], Callable[[], None]]:
    """``run(n)``: ``n`` commands over ``senders`` threads, and a ``close``.

    With ``latencies``, every command is timed on its thread from call to return.
    """
    pool = ThreadPoolExecutor(max_workers=senders, thread_name_prefix="eventsourcing")
    tickets = itertools.count()
    clock = time.perf_counter_ns

    def work(share: int) -> None:
        if latencies is None:
            for _ in range(share):
                app.open_account("alice", 100)
            return
        for _ in range(share):
            start = clock()
            app.open_account("alice", 100)
            latencies.record(clock() - start)

    async def run(n: int) -> None:
        next(tickets)
        loop = asyncio.get_running_loop()
        shares = [n // senders + (1 if i < n % senders else 0) for i in range(senders)]
        await asyncio.gather(*(loop.run_in_executor(pool, work, s) for s in shares if s))

    return run, pool.shutdown
