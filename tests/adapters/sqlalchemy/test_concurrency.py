"""Concurrent commands on SQLite and PostgreSQL: versions, positions, conflicts and retries."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from cqrs_ddd_core.exceptions import ConcurrencyError
from cqrs_ddd_core.middleware.retry import RetryMiddleware
from tests.adapters.sqlalchemy.app import App
from tests.support.accounts import Deposit
from tests.support.backends import Backend

pytestmark = pytest.mark.slow


async def test_fifty_concurrent_commands_on_one_aggregate_keep_versions_gap_free(
    db: Backend,
) -> None:
    app = App(db)
    await app.mediator.send(Deposit(account_id="hot", amount=0))

    outcomes = await asyncio.gather(
        *(app.mediator.send(Deposit(account_id="hot", amount=1)) for _ in range(50)),
        return_exceptions=True,
    )

    winners = [o for o in outcomes if not isinstance(o, BaseException)]
    losers = [o for o in outcomes if isinstance(o, BaseException)]
    assert winners, "at least one command must win"
    assert losers, "the commands must really race"
    for error in losers:
        assert isinstance(error, ConcurrencyError), repr(error)
        assert error.stream == "Account:hot"
        assert error.actual_version is not None
        assert error.actual_version > error.expected_version
    stream = await db.event_store.load_stream("Account", "hot")
    versions = [e.version for e in stream]
    assert versions == list(range(1, len(versions) + 1))
    # Opened + the first deposit, then one event per winner.
    assert len(versions) == 2 + len(winners)
    account = await app.accounts.get("hot")
    assert (account.version, account.balance) == (len(versions), len(winners))
    assert (await db.counts())["outbox"] == len(versions)


async def test_with_the_retry_middleware_every_concurrent_command_succeeds(db: Backend) -> None:
    retry = RetryMiddleware(attempts=200, initial_delay=0.001, max_delay=0.02)
    app = App(db, outer=[retry])
    await app.mediator.send(Deposit(account_id="hot", amount=0))

    responses = await asyncio.gather(
        *(app.mediator.send(Deposit(account_id="hot", amount=1)) for _ in range(50))
    )

    assert len(responses) == 50
    account = await app.accounts.get("hot")
    assert (account.version, account.balance) == (52, 50)
    versions = [e.version for e in await db.event_store.load_stream("Account", "hot")]
    assert versions == list(range(1, 53))
    # One outbox message per persisted event: nothing of a failed attempt leaked.
    assert (await db.counts())["outbox"] == 52
    assert sum(r.outcome == "success" for r in await db.audit_store.list_records()) == 51


async def test_two_hundred_concurrent_commands_on_distinct_aggregates_all_commit(
    db: Backend,
) -> None:
    app = App(db)

    responses = await asyncio.gather(
        *(app.mediator.send(Deposit(account_id=f"acc-{i}", amount=i)) for i in range(200))
    )

    everything = await db.event_store.read_all(limit=10_000)
    positions = [e.position for e in everything]
    assert len(everything) == 400  # Opened + Deposited each
    assert all(a < b for a, b in itertools.pairwise(positions))
    assert {e.event_id for e in everything} == {
        event.event_id for response in responses for event in response.events
    }
    for i in (0, 57, 199):
        assert [e.version for e in await db.event_store.load_stream("Account", f"acc-{i}")] == [
            1,
            2,
        ]
    assert await db.counts() == {
        "events": 400,
        "outbox": 400,
        "audit_log": 200,
        "aggregate_state": 200,
    }
