"""PostgreSQL group commit: how many drains start, and what each statement carries."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cqrs_ddd_core.adapters.sqlalchemy import postgres_group
from tests.support.commits import commit_new, stored_ids
from tests.support.postgres import empty_pg_engine

pytestmark = pytest.mark.postgres


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many flushes each statement sent carried (events per statement)."""
    sent: list[int] = []
    original = postgres_group.run_flush

    async def counting(engine: AsyncEngine, plan: Any, **kwargs: Any) -> tuple[int, int]:
        source = plan

        def taken() -> Any:
            found = source()
            if found is not None:
                sent.append(len(found.events))
            return found

        return await original(engine, taken, **kwargs)

    monkeypatch.setattr(postgres_group, "run_flush", counting)
    return sent


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch, statements: list[int]) -> asyncio.Event:
    """Statements are taken from the queue (they count as sent), then wait for this event."""
    opened = asyncio.Event()
    original = postgres_group.run_flush

    async def gated(engine: AsyncEngine, plan: Any, **kwargs: Any) -> tuple[int, int]:
        taken = plan()
        await opened.wait()
        return await original(engine, lambda: taken, **kwargs)

    monkeypatch.setattr(postgres_group, "run_flush", gated)
    return opened


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition`` holds (bounded)."""
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110 - a state of the committer, no event to wait on
            await asyncio.sleep(0)


@pytest.fixture
def drains_started(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per drain task started."""
    started: list[int] = []
    original = postgres_group.GroupCommitter._spawn

    def counting(self: postgres_group.GroupCommitter, *args: Any) -> None:
        started.append(1)
        original(self, *args)

    monkeypatch.setattr(postgres_group.GroupCommitter, "_spawn", counting)
    return started


async def test_commits_made_together_go_in_one_statement_sent_by_one_drain(
    postgres_database_url: str,
    statements: list[int],
    gate: asyncio.Event,
    drains_started: list[int],
) -> None:
    async with empty_pg_engine(postgres_database_url) as engine:  # batch 32, 4 in flight
        committer = postgres_group.committer_for(engine)
        assert committer is not None
        ids = [f"t{i:02d}" for i in range(16)]
        commits = [asyncio.create_task(commit_new(engine, i)) for i in ids]
        await until(lambda: committer.queued == 0 and committer.sending == 1)
        gate.set()
        uows = await asyncio.gather(*commits)

        assert statements == [16]
        # The first commit's drain was waiting to take a batch: the 15 others
        # started none (it took them all).
        assert drains_started == [1]
        assert committer.sending == 0
        for uow in uows:  # each its own steps, though they share the timings' objects
            assert [(t.operation, t.collection, t.rows) for t in uow.timings] == [
                ("INSERT", "events", 1),
                ("INSERT", "outbox", 1),
                ("INSERT", "aggregate_state", 1),
                ("COMMIT", None, 0),
            ]
        assert sorted(await stored_ids(engine)) == ids


async def test_commits_made_while_a_statement_is_out_go_in_a_second_one_at_once(
    postgres_database_url: str,
    statements: list[int],
    gate: asyncio.Event,
    drains_started: list[int],
) -> None:
    async with empty_pg_engine(postgres_database_url) as engine:
        committer = postgres_group.committer_for(engine)
        assert committer is not None
        held = asyncio.create_task(commit_new(engine, "held"))
        await until(lambda: committer.sending == 1)
        others = [asyncio.create_task(commit_new(engine, f"o{i}")) for i in range(6)]
        # The second statement is taken while the first is still out.
        await until(lambda: committer.queued == 0 and committer.sending == 2)
        gate.set()
        await asyncio.gather(held, *others)

        assert sorted(statements) == [1, 6]
        assert drains_started == [1, 1]
        assert sorted(await stored_ids(engine)) == ["held", "o0", "o1", "o2", "o3", "o4", "o5"]


async def test_a_queue_longer_than_a_batch_starts_another_drain(
    postgres_database_url: str,
    statements: list[int],
    gate: asyncio.Event,
    drains_started: list[int],
) -> None:
    async with empty_pg_engine(postgres_database_url, postgres_commit_batch=4) as engine:
        committer = postgres_group.committer_for(engine)
        assert committer is not None
        ids = [f"t{i:02d}" for i in range(10)]
        commits = [asyncio.create_task(commit_new(engine, i)) for i in ids]
        await until(lambda: committer.queued == 0 and committer.sending == 3)
        gate.set()
        await asyncio.gather(*commits)

        assert sorted(statements) == [2, 4, 4]
        assert drains_started == [1, 1, 1]
        assert sorted(await stored_ids(engine)) == ids


@pytest.fixture
def taken_at(monkeypatch: pytest.MonkeyPatch, statements: list[int]) -> list[float]:
    """When (the loop's clock) each statement was taken from the queue."""
    at: list[float] = []
    original = postgres_group.run_flush

    async def timed(engine: AsyncEngine, plan: Any, **kwargs: Any) -> tuple[int, int]:
        source = plan

        def taken() -> Any:
            found = source()
            if found is not None:
                at.append(asyncio.get_running_loop().time())
            return found

        return await original(engine, taken, **kwargs)

    monkeypatch.setattr(postgres_group, "run_flush", timed)
    return at


async def test_with_a_linger_a_commit_soon_after_another_waits_for_the_ones_made_meanwhile(
    postgres_database_url: str, statements: list[int], taken_at: list[float]
) -> None:
    linger = 0.3
    async with empty_pg_engine(postgres_database_url, postgres_commit_linger=linger) as engine:
        loop = asyncio.get_running_loop()
        await commit_new(engine, "first")  # after a quiet spell: at once, alone
        queued = loop.time()
        second = asyncio.create_task(commit_new(engine, "second"))  # soon after: lingers
        await asyncio.sleep(0)
        third = asyncio.create_task(commit_new(engine, "third"))  # joins it
        await asyncio.gather(second, third)

        assert statements == [1, 2]
        assert taken_at[1] - queued >= linger - 0.01  # it waited (the clock's granularity)
        assert sorted(await stored_ids(engine)) == ["first", "second", "third"]


async def test_with_a_linger_a_commit_after_a_quiet_spell_goes_at_once(
    postgres_database_url: str, statements: list[int], taken_at: list[float]
) -> None:
    linger = 0.3
    async with empty_pg_engine(postgres_database_url, postgres_commit_linger=linger) as engine:
        loop = asyncio.get_running_loop()
        await commit_new(engine, "first")
        await asyncio.sleep(linger + 0.05)  # the quiet spell itself is what is tested
        start = loop.time()
        await commit_new(engine, "second")

        assert statements == [1, 1]
        assert taken_at[1] - start < linger / 2
        assert sorted(await stored_ids(engine)) == ["first", "second"]


async def test_with_a_linger_a_full_batch_goes_at_once(
    postgres_database_url: str, statements: list[int], taken_at: list[float]
) -> None:
    async with empty_pg_engine(
        postgres_database_url, postgres_commit_batch=2, postgres_commit_linger=1.0
    ) as engine:
        loop = asyncio.get_running_loop()
        await commit_new(engine, "first")
        start = loop.time()
        await asyncio.gather(commit_new(engine, "second"), commit_new(engine, "third"))

        assert statements == [1, 2]
        assert taken_at[1] - start < 0.5  # not the second's linger: the batch was full
        assert sorted(await stored_ids(engine)) == ["first", "second", "third"]


async def test_with_a_linger_a_commit_cancelled_while_it_lingers_writes_nothing(
    postgres_database_url: str, statements: list[int]
) -> None:
    async with empty_pg_engine(postgres_database_url, postgres_commit_linger=0.3) as engine:
        committer = postgres_group.committer_for(engine)
        assert committer is not None
        await commit_new(engine, "first")
        lingering = asyncio.create_task(commit_new(engine, "second"))
        await until(lambda: committer.queued == 1)
        lingering.cancel()
        with pytest.raises(asyncio.CancelledError):
            await lingering
        await commit_new(engine, "third")  # the drain goes on with the next one

        assert statements == [1, 1]
        assert sorted(await stored_ids(engine)) == ["first", "third"]
