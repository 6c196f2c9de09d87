"""How close the SQLite unit of work comes to raw sqlite3, measured in one process.

Each command writes one event, one outbox message and one new aggregate's
state row, on a database file in WAL mode with the same ``synchronous``
setting on every side. Two comparisons:

* **persistence**: raw ``sqlite3`` running ``BEGIN IMMEDIATE``, three
  single-row INSERTs of ready-made rows and ``COMMIT`` (no event loop, no
  thread), against the unit of work staging the already-built aggregate,
  event and outbox message (``append`` + ``enqueue`` + ``save``, which
  serialise them) and committing (the version check, one hop to the aiosqlite
  thread). Only those parts are timed.
* **whole command**: both sides also build the aggregate and its event and
  serialise them (raw: by hand, with the same pydantic calls); the library
  also through a core ``Mediator`` with ``UnitOfWorkMiddleware``.

Run it (the target is a ratio of at least 0.5)::

    .venv/bin/python -m tests.adapters.bench_sqlite_flush [--commands 2000] [--synchronous NORMAL]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine as create_sync_engine

from cqrs_ddd_core import CommandHandler, CommandResponse, HandlerRegistry, Mediator
from cqrs_ddd_core.adapters.sqlalchemy import (
    SQLAlchemyEventStore,
    SQLAlchemyOutboxStore,
    SQLAlchemyStateRepository,
    SQLAlchemyUnitOfWork,
    create_engine,
    create_tables,
    metadata,
)
from cqrs_ddd_core.context import current_uow
from cqrs_ddd_core.middleware import UnitOfWorkMiddleware
from cqrs_ddd_core.persistence import OutboxMessage
from tests.support.accounts import Account, Deposit

INSERT_EVENT = (
    "INSERT INTO events (event_id, aggregate_type, aggregate_id, version, event_type, "
    "schema_version, payload, metadata, occurred_at, recorded_at, correlation_id, "
    "causation_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_OUTBOX = (
    "INSERT INTO outbox (message_id, message_type, payload, aggregate_type, aggregate_id, "
    "status, attempts, next_attempt_at, last_error, created_at, published_at, "
    "correlation_id, causation_id, trace_context) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_STATE = (
    "INSERT INTO aggregate_state (aggregate_type, aggregate_id, version, state, updated_at) "
    "VALUES (?, ?, ?, ?, ?)"
)
STAMP = "2024-01-01 00:00:00.000000"


def domain_objects() -> tuple[Account, Any, OutboxMessage]:
    account = Account.open(str(uuid.uuid4()), "ann")
    (event,) = account.collect_events()
    message = OutboxMessage(event.event_id, "Opened", event.payload(), event.occurred_at)
    return account, event, message


def raw_rows(account: Account, event: Any, message: OutboxMessage) -> tuple[tuple[Any, ...], ...]:
    """What a hand-written application would serialise, with the same pydantic calls."""
    import json

    return (
        (event.event_id, "Account", account.id, 1, "Opened", 1,
         event.model_dump_json(include={"owner"}), "{}", STAMP, STAMP, None, None),
        (message.message_id, "Opened", json.dumps(message.payload), "Account", account.id,
         "pending", 0, None, None, STAMP, None, None, None, "{}"),
        ("Account", account.id, 1, account.model_dump_json(), STAMP),
    )  # fmt: skip


def raw_sqlite3(path: Path, commands: int, synchronous: str, whole: bool) -> float:
    """Seconds per command with plain sqlite3."""
    engine = create_sync_engine(f"sqlite:///{path}")
    metadata.create_all(engine)
    engine.dispose()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    timed = 0.0
    for _ in range(commands):
        start = time.perf_counter()
        event_row, outbox_row, state_row = raw_rows(*domain_objects())
        if not whole:
            start = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(INSERT_EVENT, event_row)
        conn.execute(INSERT_OUTBOX, outbox_row)
        conn.execute(INSERT_STATE, state_row)
        conn.execute("COMMIT")
        timed += time.perf_counter() - start
    conn.close()
    return timed / commands


async def library(path: Path, commands: int, synchronous: str, mode: str) -> float:
    """Seconds per command through the unit of work (``persist``/``whole``) or the mediator."""
    engine = create_engine(f"sqlite:///{path}", sqlite_synchronous=synchronous)  # type: ignore[arg-type]
    await create_tables(engine)
    events = SQLAlchemyEventStore(engine)
    outbox = SQLAlchemyOutboxStore(engine)
    accounts = SQLAlchemyStateRepository(Account, engine)
    uow_factory = SQLAlchemyUnitOfWork.factory(engine)

    async def stage(objects: tuple[Account, Any, OutboxMessage], uow: Any) -> None:
        account, event, message = objects
        await events.append("Account", account.id, [event], expected_version=0, uow=uow)
        await outbox.enqueue([message], uow=uow)
        accounts.save(account, uow=uow)

    class Open(CommandHandler[Deposit, None]):
        async def handle(self, command: Deposit) -> CommandResponse[None]:
            await stage(domain_objects(), current_uow())
            return CommandResponse(None)

    registry = HandlerRegistry()
    registry.register_command_handler(Deposit, Open())
    mediator = Mediator(registry, middlewares=[UnitOfWorkMiddleware(uow_factory)])

    async def one() -> float:
        start = time.perf_counter()
        if mode == "mediator":
            await mediator.send(Deposit(account_id="-", amount=1))
            return time.perf_counter() - start
        objects = domain_objects()
        if mode == "persist":
            start = time.perf_counter()
        uow = uow_factory()
        await stage(objects, uow)
        await uow.commit()
        return time.perf_counter() - start

    await one()  # open the writer connection, warm the caches
    timed = 0.0
    for _ in range(commands):
        timed += await one()
    await engine.dispose()
    return timed / commands


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--synchronous", default="NORMAL", choices=["OFF", "NORMAL", "FULL"])
    args = parser.parse_args()
    sides: dict[str, Callable[[Path], float]] = {
        "raw sqlite3, rows": lambda p: raw_sqlite3(p, args.commands, args.synchronous, False),
        "unit of work, persist": lambda p: asyncio.run(
            library(p, args.commands, args.synchronous, "persist")
        ),
        "raw sqlite3, command": lambda p: raw_sqlite3(p, args.commands, args.synchronous, True),
        "unit of work, command": lambda p: asyncio.run(
            library(p, args.commands, args.synchronous, "whole")
        ),
        "mediator + uow, command": lambda p: asyncio.run(
            library(p, args.commands, args.synchronous, "mediator")
        ),
    }
    results: dict[str, list[float]] = {name: [] for name in sides}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):  # interleaved, so drift hits every side alike
            for index, (name, run) in enumerate(sides.items()):
                results[name].append(run(Path(tmp) / f"{round_}-{index}.db"))
    median = {name: statistics.median(values) for name, values in results.items()}
    print(f"SQLite WAL, synchronous={args.synchronous}, {args.commands} commands x {args.rounds}")
    print("1 event + 1 outbox message + 1 state row per command (median per command)")
    for name, seconds in median.items():
        base = median["raw sqlite3, rows" if name.endswith("persist") else "raw sqlite3, command"]
        ratio = "" if name.startswith("raw") else f"  {base / seconds:.2f}x raw throughput"
        print(f"  {name:26s} {seconds * 1e6:7.1f} us  {1 / seconds:7.0f}/s{ratio}")


if __name__ == "__main__":
    main()
