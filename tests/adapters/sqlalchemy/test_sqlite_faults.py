"""SQLite fault injection: a failure at every step of a commit, on a real file.

Each example injects one fault into the writer's own ``sqlite3`` connection
(``HookedConnection``): an error before or after a statement ran (``BEGIN``,
the head check, each insert, the savepoints, ``COMMIT``, ``ROLLBACK``), or the
connection lost there, with grouping on (commits queued behind a busy
thread share one transaction) or off, inline (``NORMAL``) or on the thread
(``FULL``). Then, for every command sent:

* the reported outcome equals what the file holds: committed -> all its rows;
  refused (a typed error) -> none; unknown -> all or none, never part;
* sent again with the same ids, it is applied exactly once (idempotent commits).

Cancellation and SIGKILL of a writing process have their own tests below.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from cqrs_ddd_core.adapters.sqlalchemy import (
    SQLAlchemyEventStore,
    SQLAlchemyOutboxStore,
    SQLAlchemyUnitOfWork,
)
from cqrs_ddd_core.adapters.sqlalchemy.sqlite import writer_for
from cqrs_ddd_core.exceptions import CommitOutcomeUnknownError, PersistenceError
from tests.support.accounts import Deposited
from tests.support.backends import empty_tables, sqlite_engine
from tests.support.commits import message_for
from tests.support.sqlite_faults import (
    InjectedFault,
    LoseConnection,
    OpenAccount,
    gate_on,
    hooked_writer,
)

STATEMENTS = (
    "BEGIN",
    "SAVEPOINT",
    "SELECT max",
    "INSERT INTO events",
    "INSERT INTO outbox",
    "INSERT INTO aggregate_state",
    "RELEASE",
    "COMMIT",
    "ROLLBACK",
    "PRAGMA",
)


class Deposit:
    """Deposits on the stream "base" (at version 1): events and outbox messages."""

    def __init__(self, amounts: int) -> None:
        self.events = [Deposited(amount=i + 1) for i in range(amounts)]

    @property
    def event_ids(self) -> list[str]:
        return [e.event_id for e in self.events]

    has_state = False

    async def stage(self, engine: AsyncEngine, uow: SQLAlchemyUnitOfWork) -> None:
        await SQLAlchemyEventStore(engine).append(
            "Account", "base", self.events, expected_version=1, uow=uow
        )
        await SQLAlchemyOutboxStore(engine).enqueue(
            [message_for(e, "base") for e in self.events], uow=uow
        )


class Open(OpenAccount):
    has_state = True


Unit = Open | Deposit


def rows_of(path: Path, unit: Unit) -> tuple[int, int, int]:
    """``(events, outbox, state)`` rows of ``unit`` in the file."""
    ids = unit.event_ids
    marks = ",".join("?" * len(ids))
    with contextlib.closing(sqlite3.connect(path)) as conn:
        events = conn.execute(f"SELECT count(*) FROM events WHERE event_id IN ({marks})", ids)
        outbox = conn.execute(f"SELECT count(*) FROM outbox WHERE message_id IN ({marks})", ids)
        counts = (int(events.fetchone()[0]), int(outbox.fetchone()[0]))
        state = 0
        if isinstance(unit, Open):
            found = conn.execute(
                "SELECT count(*) FROM aggregate_state WHERE aggregate_id = ?", (unit.account_id,)
            ).fetchone()
            state = int(found[0])
    return (*counts, state)


def full(unit: Unit) -> tuple[int, int, int]:
    n = len(unit.event_ids)
    return (n, n, 1 if unit.has_state else 0)


async def send(engine: AsyncEngine, unit: Unit) -> BaseException | None:
    uow = SQLAlchemyUnitOfWork(engine)
    await unit.stage(engine, uow)
    try:
        await uow.commit()
    except PersistenceError as exc:
        return exc
    return None


def check(path: Path, unit: Unit, outcome: BaseException | None) -> None:
    """The reported outcome equals what the file holds; never part of a commit."""
    held = rows_of(path, unit)
    if outcome is None:
        assert held == full(unit), f"reported committed, file holds {held}"
    elif isinstance(outcome, CommitOutcomeUnknownError):
        assert held in (full(unit), (0, 0, 0)), f"partial write {held}"
        assert outcome.event_ids == tuple(unit.event_ids)
    else:
        assert isinstance(outcome, PersistenceError)
        assert outcome.__cause__ is not None or type(outcome) is not PersistenceError
        assert held == (0, 0, 0), f"reported {type(outcome).__name__}, file holds {held}"


@pytest.fixture(params=["NORMAL", "FULL"])
async def faulty(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[AsyncEngine, Any]]:
    """An engine whose writer's connection is a ``HookedConnection`` (and its class)."""
    hooked = hooked_writer(monkeypatch)
    async with sqlite_engine(tmp_path, request.param) as engine:
        yield engine, hooked


async def hold_writer(engine: AsyncEngine) -> tuple[threading.Event, asyncio.Future[None]]:
    """Keep the writer's thread busy with a job it counts (so that inline flushes
    wait too) until the returned event is set."""
    release = threading.Event()
    loop = asyncio.get_running_loop()
    started: asyncio.Future[None] = loop.create_future()

    def blocked(_conn: sqlite3.Connection) -> None:
        loop.call_soon_threadsafe(started.set_result, None)
        release.wait(10)

    done = asyncio.ensure_future(writer_for(engine).execute(blocked))
    await started
    return release, done


def one_fault(statement: str, when: str, nth: int, lose: bool) -> Any:
    """A hook injecting one fault at the ``nth`` statement starting with ``statement``."""
    seen = [0]

    def hook(at: str, sql: str) -> None:
        if at != when or not sql.startswith(statement):
            return
        seen[0] += 1
        if seen[0] != nth:
            return
        if lose:  # the connection dies there (closing it rolls back what it held)
            raise LoseConnection(f"{when} {statement} #{nth}")
        raise InjectedFault(f"disk I/O error (injected {when} {statement} #{nth})")

    return hook


@settings(
    max_examples=45,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@example(statement="COMMIT", when="after", nth=1, lose=False, grouped=False)
@example(statement="COMMIT", when="after", nth=1, lose=True, grouped=True)
@example(statement="COMMIT", when="before", nth=1, lose=True, grouped=False)
@example(statement="ROLLBACK", when="before", nth=1, lose=False, grouped=True)
@example(statement="INSERT INTO outbox", when="after", nth=2, lose=False, grouped=True)
@given(
    statement=st.sampled_from(STATEMENTS),
    when=st.sampled_from(("before", "after")),
    nth=st.integers(1, 3),
    lose=st.booleans(),
    grouped=st.booleans(),
)
async def test_a_fault_at_any_step_reports_what_the_file_holds_and_a_retry_applies_once(
    faulty: tuple[AsyncEngine, Any],
    statement: str,
    when: str,
    nth: int,
    lose: bool,
    grouped: bool,
) -> None:
    engine, hooked = faulty
    hooked.hook = None
    await empty_tables(engine)
    await Open("base").commit(engine)  # the stream the deposits go to (version 1)
    path = Path(str(engine.url.database))
    units: list[Unit] = [Open("n1"), Deposit(2), Open("n2")]
    # A unit whose rows clash on its own (the state row exists): a refusal in the mix.
    clash = Open("base")
    units.append(clash)

    hooked.hook = one_fault(statement, when, nth, lose)
    if grouped:  # they queue behind a busy thread and go as one group
        release, blocked = await hold_writer(engine)
        tasks = [asyncio.create_task(send(engine, unit)) for unit in units]
        await asyncio.sleep(0.01)
        release.set()
        await blocked
        outcomes = await asyncio.gather(*tasks)
    else:
        outcomes = [await send(engine, unit) for unit in units]
    hooked.hook = None

    for unit, outcome in zip(units, outcomes, strict=True):
        if unit is clash:
            assert outcome is not None  # never reported committed
            continue
        check(path, unit, outcome)
    for unit in units[:-1]:  # sent again, same ids: applied exactly once
        assert await send(engine, unit) is None
        assert rows_of(path, unit) == full(unit)
    stream = await SQLAlchemyEventStore(engine).load_stream("Account", "base")
    assert [e.version for e in stream] == [1, 2, 3]


async def test_a_commit_cancelled_at_any_step_reports_what_the_file_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled while the writer's thread is held at each statement in turn:
    before the write lock, it leaves and is never written; after, it waits and
    learns the outcome (committed: the cancellation comes after). The whole
    job on the thread (``sqlite_flush="thread"``)."""
    hooked = hooked_writer(monkeypatch)
    async with sqlite_engine(tmp_path, "FULL", "thread") as engine:
        await cancelled_at_each_step(engine, hooked)


async def test_a_commit_cancelled_while_its_commit_is_on_the_thread_reports_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At FULL with ``sqlite_flush="auto"`` the rows are written on the event loop
    and only COMMIT goes to the thread: cancelled while the thread is held
    before it, the caller waits, learns it committed, and the cancellation
    comes after."""
    hooked = hooked_writer(monkeypatch)
    async with sqlite_engine(tmp_path, "FULL") as engine:
        path = Path(str(engine.url.database))
        await Open("base").commit(engine)
        hook, reached, release = gate_on("COMMIT")
        hooked.hook = hook
        unit = Open("c1")
        committed: list[bool] = []

        async def command() -> None:
            await unit.commit(engine)
            committed.append(True)

        task = asyncio.create_task(command())
        await asyncio.wait_for(reached, 5)
        task.cancel()
        for _ in range(3):
            await asyncio.sleep(0)
        assert not task.done()  # written: it waits for the outcome
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        hooked.hook = None
        assert committed == [True]
        assert rows_of(path, unit) == full(unit)


async def cancelled_at_each_step(engine: AsyncEngine, hooked: Any) -> None:
    path = Path(str(engine.url.database))
    await Open("base").commit(engine)
    steps = ("BEGIN", "INSERT INTO events", "INSERT INTO outbox", "INSERT INTO aggregate_state")
    for index, statement in enumerate(steps):
        hook, reached, release = gate_on(statement)
        hooked.hook = hook
        unit = Open(f"c{index}")
        committed: list[bool] = []

        async def command(unit: Open = unit, committed: list[bool] = committed) -> None:
            await unit.commit(engine)
            committed.append(True)

        task = asyncio.create_task(command())
        await asyncio.wait_for(reached, 5)
        task.cancel()
        if statement == "BEGIN":  # before the lock: it leaves while the thread is held
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(task), 5)
        else:  # being written: it waits for the outcome
            for _ in range(3):
                await asyncio.sleep(0)
            assert not task.done()
        release.set()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        hooked.hook = None
        assert rows_of(path, unit) == (full(unit) if committed else (0, 0, 0))
        assert bool(committed) is (statement != "BEGIN")  # held mid-write: it was written


# -- SIGKILL of a writing process ----------------------------------------------------

ROOT = Path(__file__).resolve().parents[3]

_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from cqrs_ddd_core.adapters.sqlalchemy import create_engine
    from tests.support.sqlite_faults import OpenAccount

    async def main() -> None:
        engine = create_engine(f"sqlite:///{sys.argv[1]}", sqlite_synchronous=sys.argv[2])
        index = 0
        while True:
            batch = [OpenAccount(f"k{index + i}") for i in range(4)]
            await asyncio.gather(*(unit.commit(engine) for unit in batch))
            for unit in batch:  # reported committed only after commit returned
                print(unit.account_id, flush=True)
            index += 4

    asyncio.run(main())
    """
)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
async def test_a_writing_process_killed_mid_run_leaves_every_reported_commit_and_no_part(
    tmp_path: Path, synchronous: str
) -> None:
    path = tmp_path / "killed.db"
    async with sqlite_engine(tmp_path, synchronous) as engine:
        await engine.dispose()
    os.replace(tmp_path / "cqrs.db", path)
    process = subprocess.Popen(  # noqa: ASYNC220 - a child to kill, not awaited
        [sys.executable, "-c", _WRITER, str(path), synchronous],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        text=True,
    )
    reported: list[str] = []
    try:
        assert process.stdout is not None
        while len(reported) < 40:  # it is committing, in groups
            line = await asyncio.to_thread(process.stdout.readline)
            assert line, "the writer stopped on its own"
            reported.append(line.strip())
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()

    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {
            row[0] for row in conn.execute("SELECT aggregate_id FROM events WHERE version = 1")
        }
        for account_id in stored:  # every stored command is whole
            outbox = conn.execute(
                "SELECT count(*) FROM outbox WHERE aggregate_id = ?", (account_id,)
            ).fetchone()[0]
            state = conn.execute(
                "SELECT count(*) FROM aggregate_state WHERE aggregate_id = ?", (account_id,)
            ).fetchone()[0]
            assert (outbox, state) == (1, 1), account_id
        states = conn.execute("SELECT count(*) FROM aggregate_state").fetchone()[0]
        assert states == len(stored)  # no state without its event
    assert set(reported) <= stored  # every commit reported done is in the file
