"""A command whose commit really committed but was reported unknown, retried: applied once.

The connection is cut right after the server ran the commit and the server
then looks gone (new connections hang), so the adapter cannot find out and
reports ``CommitOutcomeUnknownError``. ``RetryMiddleware`` (told to retry
that error) runs the command again with the same message id: its event ids
are the same (derived from it), the store recognises the unit of work as
committed before, and nothing is written twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from cqrs_ddd_core.adapters.sqlalchemy import create_engine
from cqrs_ddd_core.adapters.sqlalchemy.postgres_notify import notifier_for
from cqrs_ddd_core.context import DispatchContext
from cqrs_ddd_core.exceptions import CommitOutcomeUnknownError, ConcurrencyError
from cqrs_ddd_core.middleware import RetryMiddleware
from cqrs_ddd_core.pipeline.pipeline import CallNext, Placement
from tests.adapters.sqlalchemy.app import App
from tests.support.accounts import Deposit
from tests.support.backends import sql_backend
from tests.support.faultproxy import FaultProxy, running_proxy
from tests.support.postgres import empty_pg_engine

pytestmark = pytest.mark.postgres


class ServerComesBack:
    """Between the retry and the unit of work: when an attempt ends in an unknown
    outcome, note it and let the server be reachable again for the next one."""

    name = "server_comes_back"
    placement = Placement.of(outside=("unit_of_work",))

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.unknown: list[CommitOutcomeUnknownError] = []

    async def __call__(self, message: Any, context: DispatchContext, call_next: CallNext) -> Any:
        try:
            return await call_next(message, context)
        except CommitOutcomeUnknownError as unknown:
            self.unknown.append(unknown)
            self.proxy.hang_new(False)
            raise


@pytest.fixture
def proxy(postgres_database_url: str) -> Iterator[FaultProxy]:
    with running_proxy(postgres_database_url) as started:
        yield started


@pytest.fixture
async def direct(postgres_database_url: str) -> AsyncIterator[AsyncEngine]:
    async with empty_pg_engine(postgres_database_url) as engine:
        yield engine


@pytest.mark.parametrize("batch", [1, 8], ids=["alone", "grouped"])
async def test_a_command_committed_but_reported_unknown_is_applied_once_after_the_retry(
    proxy: FaultProxy, direct: AsyncEngine, postgres_database_url: str, batch: int
) -> None:
    engine = create_engine(
        proxy.url(postgres_database_url),
        postgres_commit_batch=batch,
        postgres_connect_timeout=1,
        postgres_resolve_timeout=1,
    )
    comes_back = ServerComesBack(proxy)
    retry = RetryMiddleware(
        attempts=3,
        initial_delay=0,
        max_delay=0,
        retry_on=(ConcurrencyError, CommitOutcomeUnknownError),
    )
    app = App(sql_backend(engine), outer=[retry, comes_back])
    try:
        await app.mediator.send(Deposit(account_id="r1", amount=5, note="first"))
        # Its wake-up done, no pooled connection left: once the commit's connection
        # drops, the look-up needs a new one, and new ones hang.
        notifier = notifier_for(engine)
        async with asyncio.timeout(10):
            while notifier.busy:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        await engine.dispose()
        fault = proxy.arm(b"once-only", "drop_after", then_hang_new=True)
        command = Deposit(account_id="r1", amount=7, note="once-only")

        await asyncio.wait_for(app.mediator.send(command), 30)

        assert fault.fired.is_set()
        (unknown,) = comes_back.unknown  # the first attempt was reported unknown...
        assert unknown.message_id == command.message_id
        assert len(unknown.event_ids) == 1
        async with direct.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT event_id, version FROM events WHERE aggregate_id = 'r1' "
                        "ORDER BY version"
                    )
                )
            ).all()
            state = (
                await conn.execute(
                    text("SELECT state FROM aggregate_state WHERE aggregate_id = 'r1'")
                )
            ).scalar_one()
            outbox = (
                await conn.execute(
                    text("SELECT count(*) FROM outbox WHERE message_id = :i"),
                    {"i": unknown.event_ids[0]},
                )
            ).scalar_one()
        # ...but it had committed: the retry wrote nothing more.
        assert [r.version for r in rows] == [1, 2, 3]  # opened, deposit 5, deposit 7
        assert rows[2].event_id == unknown.event_ids[0]
        assert state["balance"] == 12
        assert outbox == 1
    finally:
        proxy.hang_new(False)
        await asyncio.wait_for(engine.dispose(), 10)
