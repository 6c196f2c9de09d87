"""PostgreSQL group commit: commits made together, with no statement out, go as two."""

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


async def test_commits_made_together_with_none_out_go_as_two_statements_at_once(
    postgres_database_url: str, statements: list[int], gate: asyncio.Event
) -> None:
    async with empty_pg_engine(postgres_database_url) as engine:  # batch 32, 4 in flight
        committer = postgres_group.committer_for(engine)
        assert committer is not None
        ids = [f"t{i:02d}" for i in range(16)]
        commits = [asyncio.create_task(commit_new(engine, i)) for i in ids]
        # Both halves are taken while neither has been answered: they travel together.
        await until(lambda: committer.queued == 0 and committer.sending == 2)
        gate.set()
        uows = await asyncio.gather(*commits)

        assert statements == [8, 8]
        assert committer.sending == 0
        for uow in uows:  # each its own steps, though they share the timings' objects
            assert [(t.operation, t.collection, t.rows) for t in uow.timings] == [
                ("INSERT", "events", 1),
                ("INSERT", "outbox", 1),
                ("INSERT", "aggregate_state", 1),
                ("COMMIT", None, 0),
            ]
        assert sorted(await stored_ids(engine)) == ids


async def test_commits_made_while_a_statement_is_out_go_together_in_one(
    postgres_database_url: str, statements: list[int], gate: asyncio.Event
) -> None:
    async with empty_pg_engine(postgres_database_url) as engine:
        committer = postgres_group.committer_for(engine)
        assert committer is not None
        held = asyncio.create_task(commit_new(engine, "held"))
        await until(lambda: committer.sending == 1)
        others = [asyncio.create_task(commit_new(engine, f"o{i}")) for i in range(6)]
        await until(lambda: committer.queued == 0 and committer.sending == 2)
        gate.set()
        await asyncio.gather(held, *others)

        assert sorted(statements) == [1, 6]  # the six were not split
        assert sorted(await stored_ids(engine)) == ["held", "o0", "o1", "o2", "o3", "o4", "o5"]


async def test_one_statement_in_flight_takes_everything_queued(
    postgres_database_url: str, statements: list[int], gate: asyncio.Event
) -> None:
    """With one statement at a time there is no second one to send the rest at once."""
    async with empty_pg_engine(postgres_database_url, postgres_commits_in_flight=1) as engine:
        committer = postgres_group.committer_for(engine)
        assert committer is not None
        ids = [f"t{i:02d}" for i in range(16)]
        commits = [asyncio.create_task(commit_new(engine, i)) for i in ids]
        await until(lambda: committer.queued == 0 and committer.sending == 1)
        gate.set()
        await asyncio.gather(*commits)

        assert statements == [16]
        assert sorted(await stored_ids(engine)) == ids
