"""PostgreSQL, directed: while an earlier position is held uncommitted, a later
committed one is not visible to a reader by position; once the earlier one
commits, both are, in order.

Deterministic where the soak test in ``test_global_order.py`` is statistical:
a deferred constraint trigger holds transaction A at its COMMIT (its rows are
inserted, positions and transaction id drawn, the writers' lock released) on
an advisory lock the test owns, while transaction B writes a later position
and commits. With the engines' default group commit on: A and B go through
different engines, so they are different transactions whatever the grouping.
The control runs the same scenario with a reader whose visibility filter was
removed and shows that it does see position k+1 before k.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from cqrs_ddd_core.adapters.sqlalchemy import SQLAlchemyEventStore, SQLAlchemyUnitOfWork
from cqrs_ddd_core.adapters.sqlalchemy import event_store as event_store_module
from tests.support.accounts import Deposited
from tests.support.postgres import empty_pg_engine

pytestmark = pytest.mark.postgres

GATE = 7_300_417  # the advisory lock key the held commit waits on


@asynccontextmanager
async def held_commits(engine: AsyncEngine) -> AsyncIterator[None]:
    """Rows of streams named ``held-*`` make their transaction wait at COMMIT for GATE."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "CREATE OR REPLACE FUNCTION hold_at_commit() RETURNS trigger AS $$ BEGIN "
                "IF NEW.aggregate_id LIKE 'held-%' THEN "
                f"PERFORM pg_advisory_lock_shared({GATE}); "
                f"PERFORM pg_advisory_unlock_shared({GATE}); "
                "END IF; RETURN NULL; END $$ LANGUAGE plpgsql"
            )
        )
        await conn.execute(
            text(
                "CREATE CONSTRAINT TRIGGER hold_at_commit AFTER INSERT ON events "
                "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION hold_at_commit()"
            )
        )
    try:
        yield
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("DROP TRIGGER IF EXISTS hold_at_commit ON events"))
            await conn.execute(text("DROP FUNCTION IF EXISTS hold_at_commit()"))


async def append(engine: AsyncEngine, stream: str) -> None:
    uow = SQLAlchemyUnitOfWork(engine)
    await SQLAlchemyEventStore(engine).append(
        "Account", stream, [Deposited(amount=1)], expected_version=0, uow=uow
    )
    await uow.commit()


async def waiting_on_the_gate(engine: AsyncEngine) -> bool:
    async with engine.connect() as conn:
        result = await conn.execute(
            text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                f"AND objid = {GATE} AND NOT granted"
            )
        )
        return bool(result.scalar_one())


async def run_scenario(url: str) -> dict[str, object]:
    """A holds position k at its COMMIT; B commits k+1; what a reader sees then and after."""
    async with (
        empty_pg_engine(url) as engine_a,
        empty_pg_engine(url) as engine_b,
        held_commits(engine_a),
    ):
        store = SQLAlchemyEventStore(engine_b)
        async with engine_b.connect() as gate:
            await gate.execute(text(f"SELECT pg_advisory_lock({GATE})"))
            held = asyncio.create_task(append(engine_a, "held-a"))
            try:
                async with asyncio.timeout(30):  # A inserted its rows and waits at COMMIT
                    while not await waiting_on_the_gate(engine_b):
                        if held.done():
                            held.result()  # raises what went wrong
                            pytest.fail("the held commit did not wait")
                        await asyncio.sleep(0.01)  # the server's lock table: no event to await
                await append(engine_b, "b")  # a later position, committed
                seen_while_held = [e.aggregate_id for e in await store.read_all()]
                latest_while_held = await store.latest_position()
            finally:
                await gate.execute(text(f"SELECT pg_advisory_unlock({GATE})"))
                async with asyncio.timeout(30):
                    await held
        seen_after = [(e.aggregate_id, e.position) for e in await store.read_all()]
    return {
        "while_held": seen_while_held,
        "latest_while_held": latest_while_held,
        "after": seen_after,
    }


@pytest.mark.timeout(120)
async def test_a_later_committed_position_stays_invisible_while_an_earlier_one_may_commit(
    postgres_database_url: str,
) -> None:
    seen = await run_scenario(postgres_database_url)

    assert seen["while_held"] == []  # not ["b"]: "held-a" (position k) may still commit
    assert seen["latest_while_held"] == 0
    after = seen["after"]
    assert [stream for stream, _ in after] == ["held-a", "b"]  # type: ignore[union-attr]
    assert after[0][1] < after[1][1]  # type: ignore[index]


@pytest.mark.timeout(120)
async def test_a_reader_without_its_filter_would_see_k_plus_1_before_k(
    postgres_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The control: the same scenario, read with SQLite's query (no visibility
    # filter) on PostgreSQL. It must see "b" early, or the test above proves nothing.
    monkeypatch.setitem(
        event_store_module._READ_ALL, "postgresql", event_store_module._READ_ALL["sqlite"]
    )

    seen = await run_scenario(postgres_database_url)

    assert seen["while_held"] == ["b"]
