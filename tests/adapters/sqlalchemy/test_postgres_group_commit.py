"""PostgreSQL group commit: concurrent commits share statements, each keeps its outcome."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cqrs_ddd_core.adapters.sqlalchemy import (
    SQLAlchemyEventStore,
    SQLAlchemyUnitOfWork,
    create_engine,
    postgres_group,
)
from cqrs_ddd_core.adapters.sqlalchemy.postgres import StatementFailed, unknown_outcome
from cqrs_ddd_core.exceptions import (
    CommitOutcomeUnknownError,
    ConcurrencyError,
    ConfigurationError,
    PersistenceError,
)
from tests.support.commits import commit_deposit, commit_new, stage_command, stored_ids
from tests.support.postgres import empty_pg_engine

pytestmark = pytest.mark.postgres


@pytest.fixture
async def grouped(postgres_database_url: str) -> AsyncIterator[AsyncEngine]:
    """At most 1 statement at once, so commits made meanwhile are grouped."""
    async with empty_pg_engine(
        postgres_database_url, postgres_commit_batch=8, postgres_commits_in_flight=1
    ) as engine:
        yield engine


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many flushes each statement sent carried (events per statement)."""
    sent: list[int] = []
    original = postgres_group.run_flush

    async def counting(engine: AsyncEngine, plan: Any, **kwargs: Any) -> tuple[int, int]:
        if not callable(plan):
            sent.append(len(plan.events))
            return await original(engine, plan, **kwargs)
        source = plan  # the group takes its batch once it holds a connection

        def taken() -> Any:
            found = source()
            if found is not None:
                sent.append(len(found.events))
            return found

        return await original(engine, taken, **kwargs)

    monkeypatch.setattr(postgres_group, "run_flush", counting)
    return sent


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Statements wait for this event before they go (to hold one in flight)."""
    opened = asyncio.Event()
    original = postgres_group.run_flush

    async def gated(engine: AsyncEngine, plan: Any, **kwargs: Any) -> tuple[int, int]:
        if callable(plan):  # the batch is taken (counts as sent), then held
            taken = plan()
            plan = lambda: taken  # noqa: E731
        await opened.wait()
        return await original(engine, plan, **kwargs)

    monkeypatch.setattr(postgres_group, "run_flush", gated)
    return opened


async def test_a_lone_commit_goes_at_once_in_a_statement_of_its_own(
    grouped: AsyncEngine, statements: list[int]
) -> None:
    uow = await commit_new(grouped, "a1")

    assert statements == [1]
    assert [t.operation for t in uow.timings] == ["INSERT", "INSERT", "INSERT", "COMMIT"]
    assert await stored_ids(grouped) == ["a1"]


async def test_concurrent_commits_share_statements_and_all_land_in_order(
    grouped: AsyncEngine, statements: list[int]
) -> None:
    ids = [f"c{i:02d}" for i in range(24)]

    await asyncio.gather(*(commit_new(grouped, i) for i in ids))

    assert sum(statements) == 24
    assert len(statements) < 24  # grouped...
    assert max(statements) <= 8  # ...never more than the batch allows
    events = await SQLAlchemyEventStore(grouped).read_all(limit=100)
    assert sorted(e.aggregate_id for e in events) == ids
    positions = [e.position for e in events]
    assert positions == sorted(positions)
    assert len(set(positions)) == 24


async def test_one_conflict_in_a_group_fails_only_its_own_command(
    grouped: AsyncEngine, statements: list[int], gate: asyncio.Event
) -> None:
    gate.set()
    await commit_new(grouped, "taken")  # version 1 exists
    statements.clear()
    gate.clear()

    blocker = asyncio.create_task(commit_new(grouped, "first"))  # holds the one slot
    await asyncio.sleep(0.01)
    others = [asyncio.create_task(commit_new(grouped, f"n{i}")) for i in range(5)]
    stale = asyncio.create_task(commit_deposit(grouped, "taken", expected=0))
    await asyncio.sleep(0.01)
    gate.set()
    await asyncio.gather(blocker, *others)
    with pytest.raises(ConcurrencyError) as caught:
        await stale

    assert caught.value.stream == "Account:taken"
    assert (caught.value.expected_version, caught.value.actual_version) == (0, 1)
    assert statements[0] == 1  # the blocker alone
    assert statements[1] == 6  # the group: five new accounts and the stale deposit...
    assert statements[2:] == [1] * 6  # ...refused as a whole, then each sent alone
    assert sorted(await stored_ids(grouped)) == ["first", "n0", "n1", "n2", "n3", "n4", "taken"]


async def test_two_commits_on_one_stream_never_share_a_statement(
    grouped: AsyncEngine, statements: list[int], gate: asyncio.Event
) -> None:
    blocker = asyncio.create_task(commit_new(grouped, "first"))
    await asyncio.sleep(0.01)
    both = [asyncio.create_task(commit_new(grouped, "same")) for _ in range(2)]
    await asyncio.sleep(0.01)
    gate.set()
    await blocker
    outcomes = await asyncio.gather(*both, return_exceptions=True)

    assert sum(isinstance(o, SQLAlchemyUnitOfWork) for o in outcomes) == 1
    (lost,) = [o for o in outcomes if isinstance(o, BaseException)]
    assert isinstance(lost, ConcurrencyError)
    assert (lost.expected_version, lost.actual_version) == (0, 1)
    assert statements == [1, 1, 1]  # the second "same" waited for the first one's outcome
    assert await stored_ids(grouped) == ["first", "same"]


async def test_a_commit_cancelled_while_queued_writes_nothing(
    grouped: AsyncEngine, statements: list[int], gate: asyncio.Event
) -> None:
    blocker = asyncio.create_task(commit_new(grouped, "first"))
    await asyncio.sleep(0.01)
    cancelled = asyncio.create_task(commit_new(grouped, "cancelled"))
    kept = asyncio.create_task(commit_new(grouped, "kept"))
    await asyncio.sleep(0.01)
    cancelled.cancel()
    await asyncio.sleep(0.01)
    gate.set()
    await asyncio.gather(blocker, kept)
    with pytest.raises(asyncio.CancelledError):
        await cancelled

    assert await stored_ids(grouped) == ["first", "kept"]
    assert statements == [1, 1]


async def test_a_commit_cancelled_after_its_group_was_sent_reports_the_commit(
    grouped: AsyncEngine, gate: asyncio.Event
) -> None:
    ran: list[str] = []

    async def command() -> None:
        uow = SQLAlchemyUnitOfWork(grouped)

        async def after_commit() -> None:
            ran.append("commit")

        uow.after_commit(after_commit)
        await stage_command(grouped, uow, "sent")
        await uow.commit()
        ran.append("returned")
        await asyncio.sleep(1)
        ran.append("slept")  # pragma: no cover - the cancellation stops it

    task = asyncio.create_task(command())
    await asyncio.sleep(0.01)  # its statement is out, held at the gate
    task.cancel()
    await asyncio.sleep(0.01)
    assert not task.done()  # it waits for the database's answer
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert ran == ["commit", "returned"]
    assert await stored_ids(grouped) == ["sent"]


async def test_a_lost_connection_reports_an_unknown_outcome_to_every_command_of_the_group(
    grouped: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = asyncio.Event()
    calls = itertools.count()
    original = postgres_group.run_flush

    async def failing(engine: AsyncEngine, plan: Any, **kwargs: Any) -> tuple[int, int]:
        if next(calls) == 0:
            taken = plan()  # the first commit alone, sent, then held
            await release.wait()
            return await original(engine, lambda: taken, **kwargs)
        taken = plan()  # the batch is on a connection: sent
        cause = ConnectionResetError("connection reset by peer")
        raise StatementFailed(unknown_outcome(taken, cause), 1, 2, kind="unknown") from cause

    monkeypatch.setattr(postgres_group, "run_flush", failing)
    first = asyncio.create_task(commit_new(grouped, "first"))
    await asyncio.sleep(0.01)
    group = [asyncio.create_task(commit_new(grouped, f"g{i}")) for i in range(3)]
    await asyncio.sleep(0.01)
    release.set()
    await first
    outcomes = await asyncio.gather(*group, return_exceptions=True)

    assert all(isinstance(o, CommitOutcomeUnknownError) for o in outcomes)
    assert all("connection reset by peer" in str(o) for o in outcomes)
    assert len({id(o) for o in outcomes}) == 3  # one exception object per caller
    # each carries its own command's event ids
    assert len({o.event_ids for o in outcomes if isinstance(o, CommitOutcomeUnknownError)}) == 3
    assert next(calls) == 2  # not retried: the outcome is unknown, not "nothing written"


async def test_grouping_can_be_turned_off(
    postgres_database_url: str, statements: list[int]
) -> None:
    async with empty_pg_engine(postgres_database_url, postgres_commit_batch=1) as engine:
        await asyncio.gather(*(commit_new(engine, f"s{i}") for i in range(4)))
        assert postgres_group.committer_for(engine) is None
        assert statements == []  # each commit went its own way, not through the queue
        assert sorted(await stored_ids(engine)) == ["s0", "s1", "s2", "s3"]


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("postgres_commit_batch", 0),
        ("postgres_commit_batch", True),
        ("postgres_commits_in_flight", 0),
        ("postgres_commits_in_flight", "4"),
        ("postgres_commit_linger", -0.001),
        ("postgres_commit_linger", 1.5),
        ("postgres_commit_linger", float("nan")),
        ("postgres_commit_linger", True),
    ],
)
def test_bad_group_commit_settings_are_refused(option: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=option):
        create_engine("postgresql://u@127.0.0.1/db", **{option: value})


async def test_an_unreachable_server_fails_every_queued_commit_and_none_waits() -> None:
    """Nothing listens on port 1: each commit gets a clear error, nobody hangs."""
    engine = create_engine(
        "postgresql://nobody@127.0.0.1:1/none",
        postgres_commit_batch=2,
        postgres_commits_in_flight=1,
    )
    try:
        commits = [asyncio.create_task(commit_new(engine, f"u{i}")) for i in range(5)]
        done, pending = await asyncio.wait(commits, timeout=20)
    finally:
        await engine.dispose()

    assert not pending
    errors = [t.exception() for t in done]
    assert all(isinstance(e, PersistenceError) for e in errors)
    assert all("before the commit was sent" in str(e) for e in errors)


async def test_a_retry_that_fails_after_a_refused_group_still_answers_everyone(
    grouped: AsyncEngine, monkeypatch: pytest.MonkeyPatch, gate: asyncio.Event
) -> None:
    """The group is refused as a whole, then sending one of its commits alone fails
    unexpectedly: that one gets the error, the others their own outcome."""
    calls = itertools.count()
    original = postgres_group.run_flush

    async def flaky(engine: AsyncEngine, plan: Any, **kwargs: Any) -> tuple[int, int]:
        call = next(calls)
        if call == 1:  # the group: refused, nothing written
            plan()  # the batch is taken
            error = PersistenceError("PostgreSQL flush failed: refused (injected)")
            raise StatementFailed(error, 1, 2, kind="refused")
        if call == 2:  # the first retry: a bug-like failure, not a StatementFailed
            raise OSError("cannot reach the pool (injected)")
        return await original(engine, plan, **kwargs)

    monkeypatch.setattr(postgres_group, "run_flush", flaky)
    blocker = asyncio.create_task(commit_new(grouped, "first"))
    await asyncio.sleep(0.01)
    group = [asyncio.create_task(commit_new(grouped, f"r{i}")) for i in range(3)]
    await asyncio.sleep(0.01)
    gate.set()
    await blocker
    _done, pending = await asyncio.wait(group, timeout=5)

    assert not pending
    outcomes = [t.exception() for t in group]
    assert isinstance(outcomes[0], PersistenceError)
    assert "cannot reach the pool" in str(outcomes[0])
    assert outcomes[1:] == [None, None]
    assert await stored_ids(grouped) == ["first", "r1", "r2"]


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition`` holds (bounded)."""
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110 - a state of the committer, no event to wait on
            await asyncio.sleep(0)


async def test_a_full_queue_makes_a_commit_wait_then_fail_with_nothing_sent(
    postgres_database_url: str, gate: asyncio.Event
) -> None:
    async with empty_pg_engine(
        postgres_database_url,
        postgres_commit_batch=8,
        postgres_commits_in_flight=1,
        postgres_commit_queue=2,
        postgres_commit_timeout=0.5,
    ) as engine:
        committer = postgres_group.committer_for(engine)
        assert committer is not None
        held = asyncio.create_task(commit_new(engine, "held"))  # taken, then held at the gate
        await until(lambda: gate_reached(held, committer))
        queued = [asyncio.create_task(commit_new(engine, f"q{i}")) for i in range(2)]
        await until(lambda: committer.queued == 2)

        with pytest.raises(PersistenceError, match="commit queue stayed full"):
            await commit_new(engine, "late")  # waited for room for 0.5 s

        gate.set()
        await asyncio.gather(held, *queued)
        assert sorted(await stored_ids(engine)) == ["held", "q0", "q1"]


def gate_reached(task: asyncio.Task[Any], committer: postgres_group.GroupCommitter) -> bool:
    """The commit of ``task`` left the queue (its statement waits at the gate)."""
    return not task.done() and committer.queued == 0 and bool(committer._drains)


async def test_a_commit_waiting_for_room_goes_in_once_there_is_some(
    postgres_database_url: str, gate: asyncio.Event
) -> None:
    async with empty_pg_engine(
        postgres_database_url,
        postgres_commit_batch=8,
        postgres_commits_in_flight=1,
        postgres_commit_queue=1,
    ) as engine:
        committer = postgres_group.committer_for(engine)
        assert committer is not None
        held = asyncio.create_task(commit_new(engine, "held"))
        await until(lambda: gate_reached(held, committer))
        queued = asyncio.create_task(commit_new(engine, "q0"))
        await until(lambda: committer.queued == 1)
        waiting = asyncio.create_task(commit_new(engine, "w0"))  # the queue is full
        for _ in range(20):
            await asyncio.sleep(0)
        assert not waiting.done()
        assert committer.queued == 1

        gate.set()
        await asyncio.wait_for(asyncio.gather(held, queued, waiting), 10)
        assert sorted(await stored_ids(engine)) == ["held", "q0", "w0"]
