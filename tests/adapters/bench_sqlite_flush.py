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

With ``--shielded``, the unit-of-work sides also run (interleaved) with every
flush wrapped in a task and ``asyncio.shield``, as all SQLite commits were
before the open writer learnt to survive a cancellation without them.

Run it (the target is a ratio of at least 0.5)::

    .venv/bin/python -m tests.adapters.bench_sqlite_flush [--commands 2000] [--synchronous NORMAL]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
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
from cqrs_ddd_core.adapters.sqlalchemy import unit_of_work as uow_module
from cqrs_ddd_core.adapters.sqlalchemy.sqlite import flush_sqlite
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


class ShieldedUnitOfWork(SQLAlchemyUnitOfWork):
    """Every flush in a task under ``asyncio.shield`` (the earlier way), for comparison."""

    def __init__(self, bind: Any) -> None:
        super().__init__(bind)
        self._flush = lambda engine, plan, timings: uow_module._finish(
            flush_sqlite(engine, plan, timings)
        )


async def library(
    path: Path, commands: int, synchronous: str, mode: str, shielded: bool = False
) -> float:
    """Seconds per command through the unit of work (``persist``/``whole``) or the mediator."""
    engine = create_engine(f"sqlite:///{path}", sqlite_synchronous=synchronous)  # type: ignore[arg-type]
    await create_tables(engine)
    events = SQLAlchemyEventStore(engine)
    outbox = SQLAlchemyOutboxStore(engine)
    accounts = SQLAlchemyStateRepository(Account, engine)
    uow_class = ShieldedUnitOfWork if shielded else SQLAlchemyUnitOfWork
    uow_factory = uow_class.factory(engine)

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


async def paired_commits(path: Path, commands: int, synchronous: str) -> dict[str, list[float]]:
    """Seconds of each ``commit()``, the direct and the shielded unit of work taking
    turns on one engine (so drift and noise hit both alike)."""
    engine = create_engine(f"sqlite:///{path}", sqlite_synchronous=synchronous)  # type: ignore[arg-type]
    await create_tables(engine)
    events = SQLAlchemyEventStore(engine)
    outbox = SQLAlchemyOutboxStore(engine)
    accounts = SQLAlchemyStateRepository(Account, engine)
    kinds = {"direct": SQLAlchemyUnitOfWork, "shielded": ShieldedUnitOfWork}
    times: dict[str, list[float]] = {name: [] for name in kinds}
    for index in range(commands + 1):
        for name, uow_class in kinds.items() if index % 2 else reversed(kinds.items()):
            account, event, message = domain_objects()
            uow = uow_class(engine)
            await events.append("Account", account.id, [event], expected_version=0, uow=uow)
            await outbox.enqueue([message], uow=uow)
            accounts.save(account, uow=uow)
            start = time.perf_counter()
            await uow.commit()
            if index:  # the first opens the writer
                times[name].append(time.perf_counter() - start)
    await engine.dispose()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--synchronous", default="NORMAL", choices=["OFF", "NORMAL", "FULL"])
    parser.add_argument(
        "--shielded", action="store_true", help="also time every flush in a task + shield"
    )
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
    if args.shielded:
        labels = {"persist": "uow, persist", "whole": "uow, command", "mediator": "med+uow, cmd"}
        for mode, label in labels.items():
            sides[f"shielded {label}"] = functools.partial(
                lambda p, m: asyncio.run(
                    library(p, args.commands, args.synchronous, m, shielded=True)
                ),
                m=mode,
            )
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
    if args.shielded:
        with tempfile.TemporaryDirectory() as tmp:
            per_round = [
                asyncio.run(
                    paired_commits(Path(tmp) / f"paired-{r}.db", args.commands, args.synchronous)
                )
                for r in range(args.rounds)
            ]
        print("commit() alone, direct and shielded taking turns (median of round medians)")
        for name in ("direct", "shielded"):
            rounds = [statistics.median(times[name]) * 1e6 for times in per_round]
            shown = " ".join(f"{value:.1f}" for value in rounds)
            print(f"  {name:9s} {statistics.median(rounds):7.1f} us   rounds: {shown}")
        gaps = [
            statistics.median(b - a for a, b in zip(t["direct"], t["shielded"], strict=True)) * 1e6
            for t in per_round
        ]
        print(f"  shielded - direct, paired: {statistics.median(gaps):.1f} us per commit")


if __name__ == "__main__":
    main()
