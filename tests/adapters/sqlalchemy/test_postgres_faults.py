"""PostgreSQL commits under rude faults, through a fault-injecting proxy (tests/support/faultproxy).

Every test checks the reported outcome against what the database holds (read
on a direct connection): committed means stored once, refused means nothing
stored, unknown is only reported when it could not be found out.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from cqrs_ddd_core.adapters.sqlalchemy import SQLAlchemyUnitOfWork, create_engine
from cqrs_ddd_core.exceptions import (
    CommitOutcomeUnknownError,
    ConcurrencyError,
    PersistenceError,
)
from tests.support.commits import stage_command
from tests.support.faultproxy import FaultProxy, running_proxy
from tests.support.postgres import empty_pg_engine

pytestmark = pytest.mark.postgres

LIMITS = {
    "postgres_connect_timeout": 1.0,
    "postgres_commit_timeout": 1.5,
    "postgres_resolve_timeout": 2.0,
}
_ids = itertools.count()


def new_id(prefix: str = "victim") -> str:
    return f"{prefix}-{next(_ids)}-{time.monotonic_ns()}"


@pytest.fixture
def proxy(postgres_database_url: str) -> Iterator[FaultProxy]:
    with running_proxy(postgres_database_url) as started:
        yield started


@pytest.fixture
async def direct(postgres_database_url: str) -> AsyncIterator[AsyncEngine]:
    """The database seen without the proxy (emptied first)."""
    async with empty_pg_engine(postgres_database_url) as engine:
        yield engine


@pytest.fixture(params=[1, 8], ids=["alone", "grouped"])
async def engine(
    request: pytest.FixtureRequest,
    proxy: FaultProxy,
    postgres_database_url: str,
    direct: AsyncEngine,
) -> AsyncIterator[AsyncEngine]:
    """An engine whose every connection goes through the proxy; grouping off and on."""
    proxied = create_engine(
        proxy.url(postgres_database_url), postgres_commit_batch=request.param, **LIMITS
    )
    try:
        yield proxied
    finally:
        proxy.thaw()
        proxy.hang_new(False)
        await asyncio.wait_for(proxied.dispose(), 10)


async def commit(engine: AsyncEngine, account_id: str) -> None:
    uow = SQLAlchemyUnitOfWork(engine)
    await stage_command(engine, uow, account_id)
    await uow.commit()


async def stored(direct: AsyncEngine, account_id: str) -> dict[str, int]:
    """Rows of ``account_id`` in each table (the outbox row carries its event's id),
    read in one statement: one snapshot, even while an abandoned flush lands."""
    sql = text(
        "SELECT (SELECT count(*) FROM events WHERE aggregate_id = :i), "
        "(SELECT count(*) FROM aggregate_state WHERE aggregate_id = :i), "
        "(SELECT count(*) FROM outbox o WHERE o.message_id IN "
        "(SELECT event_id FROM events WHERE aggregate_id = :i) OR o.aggregate_id = :i)"
    )
    async with direct.connect() as conn:
        events, states, outbox = (await conn.execute(sql, {"i": account_id})).one()
    return {"events": events, "aggregate_state": states, "outbox": outbox}


ONCE = {"events": 1, "aggregate_state": 1, "outbox": 1}
NONE = {"events": 0, "aggregate_state": 0, "outbox": 0}


async def test_a_commit_whose_connection_drops_after_it_ran_is_reported_committed(
    engine: AsyncEngine, proxy: FaultProxy, direct: AsyncEngine
) -> None:
    account = new_id()
    fault = proxy.arm(account.encode(), "drop_after")

    await commit(engine, account)  # no error: the adapter found it committed

    assert fault.fired.is_set()
    assert await stored(direct, account) == ONCE


async def test_a_commit_dropped_before_it_reached_the_server_is_refused_with_nothing_stored(
    engine: AsyncEngine, proxy: FaultProxy, direct: AsyncEngine
) -> None:
    account = new_id()
    fault = proxy.arm(account.encode(), "drop_before")

    with pytest.raises(PersistenceError) as caught:
        await commit(engine, account)

    assert fault.fired.is_set()
    assert not isinstance(caught.value, (CommitOutcomeUnknownError, ConcurrencyError))
    assert caught.value.__cause__ is not None
    assert await stored(direct, account) == NONE


async def test_a_commit_cut_as_it_was_sent_reports_what_the_database_holds(
    engine: AsyncEngine, proxy: FaultProxy, direct: AsyncEngine
) -> None:
    account = new_id()
    proxy.arm(account.encode(), "drop_sent")

    try:
        await commit(engine, account)
        reported = ONCE
    except CommitOutcomeUnknownError:  # pragma: no cover - only if the look-up failed
        pytest.fail("the server was reachable: the outcome could be found out")
    except PersistenceError:
        reported = NONE

    assert await stored(direct, account) == reported


async def test_a_drop_after_commit_with_the_server_then_unreachable_is_unknown(
    engine: AsyncEngine, proxy: FaultProxy, direct: AsyncEngine
) -> None:
    account = new_id()
    proxy.arm(account.encode(), "drop_after", then_hang_new=True)

    started = time.monotonic()
    with pytest.raises(CommitOutcomeUnknownError) as caught:
        await commit(engine, account)
    elapsed = time.monotonic() - started

    assert len(caught.value.event_ids) == 1
    assert elapsed < LIMITS["postgres_resolve_timeout"] + 1.5
    assert await stored(direct, account) == ONCE  # it did commit: "unknown" was honest


async def test_a_frozen_connection_after_the_statement_is_found_out_after_the_commit_timeout(
    engine: AsyncEngine, proxy: FaultProxy, direct: AsyncEngine
) -> None:
    account = new_id()
    proxy.arm(account.encode(), "freeze_after")

    started = time.monotonic()
    await commit(engine, account)  # the statement ran; the answer was frozen
    elapsed = time.monotonic() - started

    assert LIMITS["postgres_commit_timeout"] <= elapsed < LIMITS["postgres_commit_timeout"] + 3
    assert await stored(direct, account) == ONCE


async def test_a_statement_frozen_before_the_server_is_refused_once_the_old_session_is_gone(
    engine: AsyncEngine, proxy: FaultProxy, direct: AsyncEngine
) -> None:
    account = new_id()
    proxy.arm(account.encode(), "freeze_before")

    with pytest.raises(PersistenceError) as caught:
        await commit(engine, account)

    assert not isinstance(caught.value, CommitOutcomeUnknownError)
    assert await stored(direct, account) == NONE
    proxy.thaw()  # the held bytes reach a server session that no longer exists
    assert await stored(direct, account) == NONE


@pytest.mark.parametrize("fault", ["freeze_all", "hang_new"])
async def test_wait_for_returns_within_a_second_of_its_deadline_when_the_server_is_unresponsive(
    engine: AsyncEngine, proxy: FaultProxy, direct: AsyncEngine, fault: str
) -> None:
    await commit(engine, new_id("warm"))  # a pooled connection exists
    if fault == "freeze_all":
        proxy.freeze_all()  # open connections and new ones: nothing moves
    else:
        proxy.cut_all()
        proxy.hang_new()  # accepted, never answered
    account = new_id()

    started = time.monotonic()
    with pytest.raises((TimeoutError, CommitOutcomeUnknownError)) as caught:
        await asyncio.wait_for(commit(engine, account), 0.5)
    elapsed = time.monotonic() - started

    assert elapsed < 0.5 + 1.0
    proxy.thaw()
    proxy.hang_new(False)
    if isinstance(caught.value, TimeoutError):  # not sent: nothing may be stored
        await asyncio.sleep(0)  # the abandoned flush ends on its own
    found = await stored(direct, account)
    assert found in (NONE, ONCE)
    if isinstance(caught.value, TimeoutError) and fault == "hang_new":
        assert found == NONE  # never on a connection: never sent


async def test_a_refused_connection_fails_the_commit_quickly_with_nothing_stored(
    engine: AsyncEngine, proxy: FaultProxy, direct: AsyncEngine
) -> None:
    proxy.cut_all()
    proxy.refuse()
    account = new_id()
    try:
        started = time.monotonic()
        with pytest.raises(PersistenceError) as caught:
            await commit(engine, account)
        elapsed = time.monotonic() - started
    finally:
        proxy.refuse(False)

    assert not isinstance(caught.value, CommitOutcomeUnknownError)
    assert elapsed < LIMITS["postgres_connect_timeout"] + 1
    assert await stored(direct, account) == NONE
