"""SQLite group commit: flushes queued while the writer's thread is busy share one
transaction (one fsync at FULL), each with its own outcome (in a savepoint of its own
once one of them fails)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cqrs_ddd_core.adapters.sqlalchemy import (
    SQLAlchemyUnitOfWork,
    create_tables,
    sqlite_batch,
    sqlite_split,
)
from cqrs_ddd_core.adapters.sqlalchemy import sqlite as sqlite_flush
from cqrs_ddd_core.adapters.sqlalchemy.sqlite import writer_for
from cqrs_ddd_core.exceptions import ConcurrencyError, PersistenceError
from tests.support.backends import sqlite_engine
from tests.support.commits import (
    commit_deposit,
    commit_new,
    open_the_writer,
    stage_command,
    stored_ids,
)
from tests.support.sqlite_faults import gate_on, hooked_writer


@pytest.fixture
async def full_db(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """The default durability (FULL): flushes run on the writer's thread."""
    async with sqlite_engine(tmp_path, "FULL") as engine:
        yield engine


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of units of work each flush job sent to the thread wrote (or,
    written inline at FULL, committed: see sqlite_split)."""
    sizes: list[int] = []
    original = sqlite_flush.SQLiteWriter.execute

    async def counting(self: Any, job: Any, *args: Any, **kwargs: Any) -> Any:
        if job is sqlite_batch.batch_job:
            sizes.append(len(args[0]))
        elif job is sqlite_split.commit_written:
            sizes.append(len(args[1]))
        return await original(self, job, *args, **kwargs)

    monkeypatch.setattr(sqlite_flush.SQLiteWriter, "execute", counting)
    return sizes


def queue_block(
    engine: AsyncEngine,
) -> tuple[threading.Event, asyncio.Future[None], asyncio.Future[None]]:
    """Queue a job that keeps the writer's thread busy until the returned event is
    set: ``(release, started, done)``."""
    release = threading.Event()
    loop = asyncio.get_running_loop()
    started = loop.create_future()

    def blocked(_conn: sqlite3.Connection) -> None:
        loop.call_soon_threadsafe(started.set_result, None)
        release.wait(10)

    thread = writer_for(engine).thread
    assert thread is not None
    return release, started, asyncio.ensure_future(thread.submit(blocked))


async def hold_thread(engine: AsyncEngine) -> tuple[threading.Event, asyncio.Future[None]]:
    """Keep the writer's thread busy until the returned event is set."""
    release, started, done = queue_block(engine)
    await started
    return release, done


async def queue_behind_a_busy_thread(
    engine: AsyncEngine, commits: list[Any]
) -> tuple[asyncio.Task[Any], list[asyncio.Task[Any]], threading.Event, asyncio.Future[None]]:
    """A leader whose job waits behind a blocked thread, then ``commits`` queued behind it."""
    release, blocked = await hold_thread(engine)
    leader = asyncio.create_task(commit_new(engine, "leader"))
    await asyncio.sleep(0.01)  # its job is queued behind the blocked one
    queued = [asyncio.create_task(commit) for commit in commits]
    await asyncio.sleep(0.01)  # they wait in the writer's queue
    return leader, queued, release, blocked


async def grouped_outcomes(engine: AsyncEngine, commits: list[Any]) -> list[Any]:
    """Let ``commits`` go as one group behind a leader whose job waits on a busy
    thread: what each returned or raised."""
    leader, queued, release, blocked = await queue_behind_a_busy_thread(engine, commits)
    release.set()
    await blocked
    await leader
    return list(await asyncio.gather(*queued, return_exceptions=True))


async def test_commits_made_while_the_thread_is_busy_share_one_transaction(
    full_db: AsyncEngine, batches: list[int]
) -> None:
    await open_the_writer(full_db)
    batches.clear()

    uows = await grouped_outcomes(full_db, [commit_new(full_db, f"g{i}") for i in range(6)])

    assert batches == [1, 6]  # the leader alone, then the six together
    commits = {u.timings[-1] for u in uows}
    assert len(commits) == 1  # one COMMIT step: they shared it
    assert all([t.operation for t in u.timings] == [
        "BEGIN", "INSERT", "INSERT", "INSERT", "COMMIT"
    ] for u in uows)  # fmt: skip
    assert sorted(await stored_ids(full_db)) == sorted(
        ["a1", "leader", *(f"g{i}" for i in range(6))]
    )


async def test_a_conflict_in_a_group_fails_only_its_own_command(
    full_db: AsyncEngine, batches: list[int]
) -> None:
    await open_the_writer(full_db)  # account "a1" exists at version 1
    batches.clear()

    outcomes = await grouped_outcomes(
        full_db,
        [
            commit_new(full_db, "n1"),
            commit_deposit(full_db, "a1", expected=0),  # stale
            commit_new(full_db, "n2"),
            commit_new(full_db, "a1"),  # exists: version 1 is taken
            commit_new(full_db, "n3"),
        ],
    )

    assert batches == [1, 5]
    stale, taken = outcomes[1], outcomes[3]
    assert isinstance(stale, ConcurrencyError)
    assert (stale.stream, stale.expected_version, stale.actual_version) == ("Account:a1", 0, 1)
    assert isinstance(taken, ConcurrencyError)
    assert (taken.expected_version, taken.actual_version) == (0, 1)
    assert all(isinstance(outcomes[i], SQLAlchemyUnitOfWork) for i in (0, 2, 4))
    assert sorted(await stored_ids(full_db)) == ["a1", "leader", "n1", "n2", "n3"]
    async with full_db.connect() as conn:  # nothing of the failed ones: no orphan rows
        outbox = (await conn.execute(text("SELECT count(*) FROM outbox"))).scalar_one()
        states = (await conn.execute(text("SELECT count(*) FROM aggregate_state"))).scalar_one()
    assert (outbox, states) == (5, 5)


async def test_two_commits_on_one_new_stream_in_a_group_the_first_wins(
    full_db: AsyncEngine,
) -> None:
    await open_the_writer(full_db)

    first, second = await grouped_outcomes(
        full_db, [commit_new(full_db, "same"), commit_new(full_db, "same")]
    )

    assert isinstance(first, SQLAlchemyUnitOfWork)
    assert isinstance(second, ConcurrencyError)
    assert (second.expected_version, second.actual_version) == (0, 1)


async def test_a_group_without_failure_writes_its_plans_with_no_savepoint(
    full_db: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The happy path writes a group's plans one after another: two statements
    fewer per plan (each a GIL hand-off between the writer and the loop)."""
    statements: list[str] = []
    hooked = hooked_writer(monkeypatch)
    hooked.hook = lambda when, sql: statements.append(sql) if when == "before" else None
    await open_the_writer(full_db)
    statements.clear()

    outcomes = await grouped_outcomes(full_db, [commit_new(full_db, f"h{i}") for i in range(3)])

    assert all(isinstance(u, SQLAlchemyUnitOfWork) for u in outcomes)
    assert len([s for s in statements if s.startswith("INSERT INTO events")]) == 4
    assert not [s for s in statements if s.startswith(("SAVEPOINT", "RELEASE", "ROLLBACK"))]
    assert await stored_ids(full_db) == ["a1", "leader", "h0", "h1", "h2"]


async def test_a_group_with_a_failure_is_written_again_each_plan_in_a_savepoint(
    full_db: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When one plan of a group fails, the group is rolled back and written again,
    each plan in a savepoint: the others still commit, the failed one alone is refused."""
    statements: list[str] = []
    hooked = hooked_writer(monkeypatch)
    hooked.hook = lambda when, sql: statements.append(sql) if when == "before" else None
    await open_the_writer(full_db)
    statements.clear()

    outcomes = await grouped_outcomes(
        full_db, [commit_new(full_db, "k1"), commit_new(full_db, "a1"), commit_new(full_db, "k2")]
    )

    assert isinstance(outcomes[0], SQLAlchemyUnitOfWork)
    assert isinstance(outcomes[1], ConcurrencyError)  # the stream a1 exists
    assert (outcomes[1].expected_version, outcomes[1].actual_version) == (0, 1)
    assert isinstance(outcomes[2], SQLAlchemyUnitOfWork)
    assert [s for s in statements if s.startswith("SAVEPOINT")] == [
        "SAVEPOINT cqrs_ddd_plan_0", "SAVEPOINT cqrs_ddd_plan_1", "SAVEPOINT cqrs_ddd_plan_2"
    ]  # fmt: skip
    assert await stored_ids(full_db) == ["a1", "leader", "k1", "k2"]


async def test_a_commit_cancelled_while_queued_writes_nothing(full_db: AsyncEngine) -> None:
    await open_the_writer(full_db)

    leader, queued, release, blocked = await queue_behind_a_busy_thread(
        full_db, [commit_new(full_db, "cancelled"), commit_new(full_db, "kept")]
    )
    queued[0].cancel()
    await asyncio.sleep(0.01)
    release.set()
    await blocked
    await leader
    await queued[1]
    with pytest.raises(asyncio.CancelledError):
        await queued[0]

    assert sorted(await stored_ids(full_db)) == ["a1", "kept", "leader"]
    assert writer_for(full_db)._idle()


def _command(engine: AsyncEngine, ran: list[str]) -> Any:
    async def command(account_id: str) -> None:
        uow = SQLAlchemyUnitOfWork(engine)

        async def after_commit() -> None:
            ran.append(account_id)

        uow.after_commit(after_commit)
        await stage_command(engine, uow, account_id)
        await uow.commit()

    return command


async def test_a_grouped_commit_cancelled_before_its_group_is_written_leaves_at_once(
    full_db: AsyncEngine, batches: list[int]
) -> None:
    await open_the_writer(full_db)
    batches.clear()
    ran: list[str] = []
    command = _command(full_db, ran)

    release, blocked = await hold_thread(full_db)
    leader = asyncio.create_task(command("leader"))
    await asyncio.sleep(0.01)
    grouped = [asyncio.create_task(command(f"g{i}")) for i in range(3)]
    await asyncio.sleep(0.01)
    # Thread: [blocked, leader's job, second block]; the group's job is sent when
    # the leader's ends, so it waits behind the second block.
    release_second, second_started, second = queue_block(full_db)
    release.set()
    await blocked
    await leader
    await second_started
    await asyncio.sleep(0.01)
    assert not writer_for(full_db)._queue  # the group was taken: its job is on the thread
    grouped[1].cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(grouped[1]), 5)  # at once: not behind the block
    release_second.set()
    await second
    outcomes = await asyncio.gather(*grouped, return_exceptions=True)

    assert batches == [1, 3]
    assert isinstance(outcomes[1], asyncio.CancelledError)
    assert sorted(ran) == ["g0", "g2", "leader"]
    assert sorted(await stored_ids(full_db)) == ["a1", "g0", "g2", "leader"]  # g1 never written


async def test_a_grouped_commit_cancelled_while_its_group_is_written_reports_the_commit(
    full_db: AsyncEngine, batches: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    hooked = hooked_writer(monkeypatch)
    await open_the_writer(full_db)
    batches.clear()
    ran: list[str] = []
    command = _command(full_db, ran)
    # The group's rows are written on the event loop (FULL, "auto"): held on
    # the thread before the group's COMMIT (the leader's came first).
    hook, reached, release_gate = gate_on("COMMIT", nth=2)
    hooked.hook = hook

    release, blocked = await hold_thread(full_db)
    leader = asyncio.create_task(command("leader"))
    await asyncio.sleep(0.01)
    grouped = [asyncio.create_task(command(f"g{i}")) for i in range(3)]
    await asyncio.sleep(0.01)
    release.set()
    await blocked
    await leader
    await reached
    grouped[1].cancel()
    await asyncio.sleep(0.01)
    assert not grouped[1].done()  # it waits for the database's answer
    release_gate.set()
    outcomes = await asyncio.gather(*grouped, return_exceptions=True)

    assert batches == [1, 3]
    assert isinstance(outcomes[1], asyncio.CancelledError)
    assert sorted(ran) == ["g0", "g1", "g2", "leader"]  # g1 committed, and said so
    assert len(await stored_ids(full_db)) == 5


async def test_a_write_that_aborts_the_transaction_fails_every_command_of_the_group(
    full_db: AsyncEngine,
) -> None:
    """RAISE(ROLLBACK) in a trigger ends the whole transaction: the plans written
    before it in the group were rolled back too and must not report a commit."""
    await open_the_writer(full_db)
    async with full_db.begin() as conn:
        await conn.execute(
            text(
                "CREATE TRIGGER poison BEFORE INSERT ON events WHEN NEW.aggregate_id = 'poison' "
                "BEGIN SELECT RAISE(ROLLBACK, 'poisoned'); END"
            )
        )

    outcomes = await grouped_outcomes(
        full_db,
        [
            commit_new(full_db, "before"),
            commit_new(full_db, "poison"),
            commit_new(full_db, "after"),
        ],
    )

    assert all(isinstance(o, PersistenceError) for o in outcomes)
    assert "poisoned" in str(outcomes[1])
    assert "rolled back the transaction this commit shared" in str(outcomes[0])
    assert sorted(await stored_ids(full_db)) == ["a1", "leader"]
    assert not writer_for(full_db).thread.connection.in_transaction
    await commit_new(full_db, "later")  # the writer goes on
    assert "later" in await stored_ids(full_db)


async def test_a_statement_level_abort_fails_only_its_own_command(full_db: AsyncEngine) -> None:
    await open_the_writer(full_db)
    async with full_db.begin() as conn:
        await conn.execute(
            text(
                "CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.aggregate_id = 'refused' "
                "BEGIN SELECT RAISE(ABORT, 'refused here'); END"
            )
        )

    outcomes = await grouped_outcomes(
        full_db,
        [commit_new(full_db, "x1"), commit_new(full_db, "refused"), commit_new(full_db, "x2")],
    )

    assert isinstance(outcomes[1], PersistenceError)
    assert "refused here" in str(outcomes[1])
    assert sorted(await stored_ids(full_db)) == ["a1", "leader", "x1", "x2"]


async def test_a_failing_commit_fails_every_command_of_the_group(tmp_path: Path) -> None:
    """A deferred foreign key is checked at COMMIT: the group's commit fails, nothing stays."""
    async with sqlite_engine(tmp_path, "FULL") as engine:

        @event.listens_for(engine.sync_engine, "connect")
        def _foreign_keys(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute("PRAGMA foreign_keys=ON")

        await engine.dispose()  # reconnect with the pragma
        async with engine.begin() as conn:
            for ddl in (
                "CREATE TABLE parent (id TEXT PRIMARY KEY)",
                "CREATE TABLE child (pid TEXT REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)",
                "CREATE TRIGGER orphan AFTER INSERT ON events WHEN NEW.aggregate_id = 'orphan' "
                "BEGIN INSERT INTO child VALUES ('nobody'); END",
            ):
                await conn.execute(text(ddl))
        await open_the_writer(engine)

        outcomes = await grouped_outcomes(
            engine, [commit_new(engine, "ok1"), commit_new(engine, "orphan")]
        )

        assert all(isinstance(o, PersistenceError) for o in outcomes)
        assert all("FOREIGN KEY" in str(o) for o in outcomes)
        assert outcomes[0] is not outcomes[1]  # one exception object per caller
        assert sorted(await stored_ids(engine)) == ["a1", "leader"]


async def test_a_lone_sender_never_waits_for_a_group(
    full_db: AsyncEngine, batches: list[int]
) -> None:
    await open_the_writer(full_db)
    batches.clear()

    for i in range(5):
        await commit_new(full_db, f"s{i}")

    assert batches == [1] * 5
    assert await stored_ids(full_db) == ["a1", "s0", "s1", "s2", "s3", "s4"]


# -- failure paths of the group job, on a real SQLite file ---------------------------


class FailingConnection:
    """A sqlite3 connection whose statements starting with ``fail_on`` raise (disk I/O)."""

    def __init__(self, conn: sqlite3.Connection, fail_on: str) -> None:
        self._conn, self._fail_on = conn, fail_on

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.startswith(self._fail_on):
            raise sqlite3.OperationalError("disk I/O error (injected)")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


async def captured_plans(engine: AsyncEngine, account_ids: list[str]) -> list[Any]:
    """The flush plans of "open account" commands, captured instead of written."""
    plans: list[Any] = []

    async def capture(_engine: Any, plan: Any, _timings: Any) -> None:
        plans.append(plan)

    for account_id in account_ids:
        uow = SQLAlchemyUnitOfWork(engine)
        uow._flush = capture
        await stage_command(engine, uow, account_id)
        await uow.commit()
    return plans


def batch(conn: Any, plans: list[Any]) -> list[Any]:
    """Run the writer's job for ``plans`` (a group) on ``conn``, as its thread would."""
    tickets = [sqlite_batch.Ticket() for _ in plans]
    return sqlite_batch.batch_job(conn, plans, tickets, datetime.now(UTC), time.monotonic(), None)


def stored(path: Path, table: str) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


async def plans_with_a_conflict(tmp_path: Path) -> tuple[Path, list[Any]]:
    """Three plans; "bad" will fail on its own: its state row exists already."""
    async with sqlite_engine(tmp_path, "FULL") as engine:
        plans = await captured_plans(engine, ["ok1", "bad", "ok2"])
    path = tmp_path / "cqrs.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(
            "INSERT INTO aggregate_state (aggregate_type, aggregate_id, version, state, "
            "updated_at) VALUES ('Account', 'bad', 7, '{}', '2026-01-01 00:00:00.000000')"
        )
        conn.commit()
    return path, plans


async def test_a_failed_plan_that_cannot_be_rolled_back_alone_fails_the_whole_group(
    tmp_path: Path,
) -> None:
    path, plans = await plans_with_a_conflict(tmp_path)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        outcomes = batch(FailingConnection(conn, "ROLLBACK TO"), plans)
        assert not conn.in_transaction

    assert all(isinstance(e, PersistenceError) for _, e in outcomes)  # none committed
    assert (stored(path, "events"), stored(path, "outbox")) == (0, 0)
    assert stored(path, "aggregate_state") == 1  # only the row that was there


async def test_a_conflict_that_cannot_be_named_still_fails_only_its_own_plan(
    tmp_path: Path,
) -> None:
    """The query naming the conflict fails: a plain PersistenceError for that plan."""
    path, plans = await plans_with_a_conflict(tmp_path)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        outcomes = batch(FailingConnection(conn, "SELECT"), plans)
        assert not conn.in_transaction

    errors = [e for _, e in outcomes]
    assert (errors[0], errors[2]) == (None, None)
    assert isinstance(errors[1], PersistenceError)
    assert (stored(path, "events"), stored(path, "outbox")) == (2, 2)  # ok1 and ok2 only


async def test_a_busy_commit_after_every_plan_failed_leaves_no_transaction_open(
    tmp_path: Path,
) -> None:
    """Rollback journal (a hand-made engine): a reader's SHARED lock makes COMMIT busy."""
    path = tmp_path / "journal.db"
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}", connect_args={"timeout": 0.3})
    try:
        await create_tables(engine)
        await open_the_writer(engine)  # "a1" exists
        release, blocked = await hold_thread(engine)
        leader = asyncio.create_task(commit_new(engine, "leader"))
        await asyncio.sleep(0.01)
        release_second, second_started, second = queue_block(engine)
        duplicates = [asyncio.create_task(commit_new(engine, "a1")) for _ in range(2)]
        await asyncio.sleep(0.01)
        release.set()
        await blocked
        await leader
        await second_started  # the group's job waits behind the second block
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as reader:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM events").fetchone()  # holds SHARED
            release_second.set()
            await second
            outcomes = await asyncio.gather(*duplicates, return_exceptions=True)
            assert not writer_for(engine).thread.connection.in_transaction
            reader.execute("COMMIT")

        assert all(isinstance(o, ConcurrencyError) for o in outcomes)
        await commit_new(engine, "later")  # the writer goes on
        assert "later" in await stored_ids(engine)
    finally:
        await engine.dispose()


async def test_a_writer_closed_under_a_queued_group_sends_each_command_to_a_new_one(
    full_db: AsyncEngine,
) -> None:
    """Closed (as ``dispose()`` does) while commits wait in its queue: they were never
    sent, so each goes to a new writer; nobody waits for ever, nothing is lost."""
    await open_the_writer(full_db)
    writer = writer_for(full_db)
    thread = writer.thread
    assert thread is not None
    release, blocked = await hold_thread(full_db)
    leader = asyncio.create_task(commit_new(full_db, "leader"))
    await asyncio.sleep(0.01)
    followers = [asyncio.create_task(commit_new(full_db, f"f{i}")) for i in range(2)]
    await asyncio.sleep(0.01)
    writer.close()  # the leader's job is queued before the stop: it still runs
    release.set()
    await blocked
    await leader
    done, pending = await asyncio.wait(followers, timeout=5)

    assert not pending  # nobody waits for ever
    assert all(t.exception() is None for t in done)
    assert writer.thread is not thread  # a new writer took them
    assert sorted(await stored_ids(full_db)) == ["a1", "f0", "f1", "leader"]
    await commit_new(full_db, "later")
    assert "later" in await stored_ids(full_db)


async def test_at_full_the_rows_are_written_on_the_loop_and_only_commit_on_the_thread(
    full_db: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One take-back of the GIL per commit: every statement but COMMIT runs on the
    event loop's thread; with sqlite_flush="thread" everything runs on the writer's."""
    where: list[tuple[str, bool]] = []
    loop_thread = threading.get_ident()
    hooked = hooked_writer(monkeypatch)
    hooked.hook = lambda when, sql: (
        where.append((sql.split()[0], threading.get_ident() == loop_thread))
        if when == "before"
        else None
    )
    await open_the_writer(full_db)
    where.clear()

    await commit_new(full_db, "s1")

    assert where == [
        ("BEGIN", True), ("INSERT", True), ("INSERT", True), ("INSERT", True), ("COMMIT", False)
    ]  # fmt: skip


async def test_with_flush_thread_everything_runs_on_the_writer_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    where: list[bool] = []
    loop_thread = threading.get_ident()
    hooked = hooked_writer(monkeypatch)
    hooked.hook = lambda when, _sql: (
        where.append(threading.get_ident() == loop_thread) if when == "before" else None
    )
    async with sqlite_engine(tmp_path, "FULL", "thread") as engine:
        await open_the_writer(engine)
        where.clear()
        await commit_new(engine, "s1")
    assert len(where) == 5
    assert not any(where)


async def test_a_group_whose_lock_is_taken_after_its_rollback_is_written_again_on_the_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inline, a group with a failed plan is rolled back, which lets the write lock
    go. Another connection (another process, or the application's own pool)
    may take it before the group is written again in savepoints. Inline
    nothing waits for a lock: the thread writes the group again, waiting for
    the lock as configured, so only the failed plan is refused (found by the
    demo in CI: every command of the group got "database is locked")."""
    loop_thread = threading.get_ident()
    holders: list[threading.Timer] = []

    def take_the_lock_after(rollback: Any) -> Any:
        def rolled_back(conn: sqlite3.Connection) -> None:
            rollback(conn)
            if holders or threading.get_ident() != loop_thread:
                return
            other = sqlite3.connect(
                tmp_path / "cqrs.db", isolation_level=None, check_same_thread=False
            )
            other.execute("BEGIN IMMEDIATE")  # the lock is gone to another connection

            def let_go() -> None:
                other.rollback()
                other.close()

            holders.append(threading.Timer(0.3, let_go))
            holders[0].start()

        return rolled_back

    monkeypatch.setattr(sqlite_split, "rollback", take_the_lock_after(sqlite_split.rollback))
    monkeypatch.setattr(sqlite_batch, "rollback", take_the_lock_after(sqlite_batch.rollback))
    async with sqlite_engine(tmp_path, "FULL") as engine:
        await open_the_writer(engine)

        outcomes = await grouped_outcomes(
            engine, [commit_new(engine, "k1"), commit_new(engine, "a1"), commit_new(engine, "k2")]
        )

        assert len(holders) == 1  # the lock was taken between the rollback and the BEGIN
        holders[0].join(5)
        assert isinstance(outcomes[0], SQLAlchemyUnitOfWork)
        assert isinstance(outcomes[1], ConcurrencyError)  # the stream a1 exists
        assert isinstance(outcomes[2], SQLAlchemyUnitOfWork)
        assert await stored_ids(engine) == ["a1", "leader", "k1", "k2"]
