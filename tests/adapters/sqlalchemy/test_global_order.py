"""A reader by global position never sees position k+1 while k may still commit.

Many writers append concurrently while a reader follows ``read_all`` from its
last position, as a projection would. Afterwards the reader must have seen
exactly what the store finally holds, in order, each event once: had it ever
seen k+1 before k was committed, it would have moved past k and never seen it.

On PostgreSQL triggers make every flush linger: up to 2 ms before each event
row is inserted (while its transaction id and earlier positions are already
drawn) and up to 10 ms after its inserts, before it commits. Concurrent
flushes then draw positions out of transaction order and commit out of
position order all the time.

What the adapter's events lock prevents is shown deterministically at the end
(no race to win): one interleaving of two flushes, driven by triggers that
wait on advisory locks the test holds, makes the same reader miss an event for
good once the lock is taken out of the flush statement, and miss nothing with it.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cqrs_ddd_core.adapters.sqlalchemy import (
    SQLAlchemyEventStore,
    SQLAlchemyUnitOfWork,
)
from cqrs_ddd_core.adapters.sqlalchemy import postgres as pg_flush
from tests.support.accounts import Deposited
from tests.support.backends import Backend
from tests.support.postgres import empty_pg_engine

pytestmark = pytest.mark.slow

WRITERS = 8
COMMITS_PER_WRITER = 25


async def write(engine: AsyncEngine, writer: int) -> None:
    store = SQLAlchemyEventStore(engine)
    rng = random.Random(writer)
    for commit in range(COMMITS_PER_WRITER):
        uow = SQLAlchemyUnitOfWork(engine)
        for stream in range(rng.randint(1, 2)):
            events = [Deposited(amount=i) for i in range(rng.randint(1, 3))]
            await store.append(
                "Account", f"w{writer}-c{commit}-s{stream}", events, expected_version=0, uow=uow
            )
        await uow.commit()


async def follow(store: SQLAlchemyEventStore, done: asyncio.Event) -> list[int]:
    """Read everything after the last position seen, until the writers are done."""
    seen: list[int] = []
    last = 0
    while True:
        finished = done.is_set()  # decided before the read: the last read sees everything
        batch = await store.read_all(after_position=last, limit=1000)
        seen.extend(e.position for e in batch)
        if batch:
            last = batch[-1].position
        elif finished:
            return seen


async def run_writers_and_a_reader(engine: AsyncEngine) -> tuple[list[int], list[int]]:
    store = SQLAlchemyEventStore(engine)
    done = asyncio.Event()
    reader = asyncio.create_task(follow(store, done))
    await asyncio.gather(*(write(engine, w) for w in range(WRITERS)))
    done.set()
    seen = await reader
    final = [e.position for e in await store.read_all(limit=100_000)]
    return seen, final


@asynccontextmanager
async def lingering_flushes(engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """On PostgreSQL, each flush waits 0-10 ms between drawing positions and committing."""
    if engine.dialect.name != "postgresql":
        yield engine
        return
    async with engine.begin() as conn:
        for name, seconds, result in (("linger_row", 0.002, "NEW"), ("linger", 0.01, "NULL")):
            await conn.execute(
                text(
                    f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger AS $$ BEGIN "
                    f"PERFORM pg_sleep(random() * {seconds}); RETURN {result}; END $$ "
                    "LANGUAGE plpgsql"
                )
            )
        await conn.execute(
            text(
                "CREATE TRIGGER linger_row BEFORE INSERT ON events "
                "FOR EACH ROW EXECUTE FUNCTION linger_row()"
            )
        )
        await conn.execute(
            text(
                "CREATE TRIGGER linger AFTER INSERT ON events "
                "FOR EACH STATEMENT EXECUTE FUNCTION linger()"
            )
        )
    try:
        yield engine
    finally:
        async with engine.begin() as conn:
            for name in ("linger_row", "linger"):
                await conn.execute(text(f"DROP TRIGGER IF EXISTS {name} ON events"))
                await conn.execute(text(f"DROP FUNCTION IF EXISTS {name}()"))


async def without_group_commit(url: str) -> tuple[list[int], list[int]]:
    """Writers and a reader on PostgreSQL with lingering flushes, each commit alone."""
    async with (
        empty_pg_engine(url, postgres_commit_batch=1) as engine,
        lingering_flushes(engine),
    ):
        return await run_writers_and_a_reader(engine)


async def test_a_reader_by_position_sees_every_event_once_and_in_order(db: Backend) -> None:
    """The soak test. On PostgreSQL with group commit on, concurrent commits share
    statements and this cannot tell a reader without its visibility filter from
    one with it: test_global_order_held_commit.py checks the filter directly."""
    assert db.engine is not None
    async with lingering_flushes(db.engine) as engine:
        seen, final = await run_writers_and_a_reader(engine)

    assert len(final) >= WRITERS * COMMITS_PER_WRITER
    assert all(a < b for a, b in itertools.pairwise(final))
    assert seen == final


@pytest.mark.postgres
async def test_the_reader_sees_every_event_once_and_in_order_without_group_commit(
    postgres_database_url: str,
) -> None:
    """Every commit its own statement: as many concurrent statements as writers."""
    seen, final = await without_group_commit(postgres_database_url)

    assert len(final) >= WRITERS * COMMITS_PER_WRITER
    assert seen == final


# The lock, deterministically. Without it, a flush P can take its transaction
# id, then another flush Q draw position q and P draw p > q after it: P has
# the smaller transaction id but the larger position. Once P has committed
# while Q still runs, the reader's filter lets p through (P's id is below the
# oldest running one, Q's) and holds q back; the reader moves past q, which
# commits later and is missed for good. The lock keeps a flush's transaction
# id and positions inside one critical section, so Q waits for P there.
# Triggers make each transaction wait on an advisory lock the test holds, so
# the order of every step is decided by the test, never by timing.

HOLD_P = 7_300_418  # P waits on it between its first and second event rows
HOLD_Q = 7_300_419  # Q waits on it at COMMIT, its rows inserted
WAIT = 10.0  # seconds: the bound on every wait of the interleaved scenario


@asynccontextmanager
async def holding_triggers(engine: AsyncEngine) -> AsyncIterator[None]:
    """Stream ``p`` waits for HOLD_P before inserting its first event (its
    transaction id and first position drawn); stream ``q`` waits for HOLD_Q at COMMIT."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "CREATE OR REPLACE FUNCTION gorder_hold_p() RETURNS trigger AS $$ BEGIN "
                "IF NEW.aggregate_id = 'p' AND NEW.version = 1 THEN "
                f"PERFORM pg_advisory_lock_shared({HOLD_P}); "
                f"PERFORM pg_advisory_unlock_shared({HOLD_P}); "
                "END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
            )
        )
        await conn.execute(
            text(
                "CREATE TRIGGER gorder_hold_p BEFORE INSERT ON events "
                "FOR EACH ROW EXECUTE FUNCTION gorder_hold_p()"
            )
        )
        await conn.execute(
            text(
                "CREATE OR REPLACE FUNCTION gorder_hold_q() RETURNS trigger AS $$ BEGIN "
                "IF NEW.aggregate_id = 'q' THEN "
                f"PERFORM pg_advisory_lock_shared({HOLD_Q}); "
                f"PERFORM pg_advisory_unlock_shared({HOLD_Q}); "
                "END IF; RETURN NULL; END $$ LANGUAGE plpgsql"
            )
        )
        await conn.execute(
            text(
                "CREATE CONSTRAINT TRIGGER gorder_hold_q AFTER INSERT ON events "
                "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION gorder_hold_q()"
            )
        )
    try:
        yield
    finally:
        async with engine.begin() as conn:
            for name in ("gorder_hold_p", "gorder_hold_q"):
                await conn.execute(text(f"DROP TRIGGER IF EXISTS {name} ON events"))
                await conn.execute(text(f"DROP FUNCTION IF EXISTS {name}()"))


async def append_events(engine: AsyncEngine, stream: str, count: int) -> None:
    uow = SQLAlchemyUnitOfWork(engine)
    events = [Deposited(amount=i) for i in range(count)]
    await SQLAlchemyEventStore(engine).append(
        "Account", stream, events, expected_version=0, uow=uow
    )
    await uow.commit()


async def until_waiting(
    conn: AsyncConnection, keys: tuple[int, ...], *writers: asyncio.Task[None]
) -> int:
    """Poll the server's lock table (there is no event to await) until a
    transaction waits on one of the advisory locks ``keys``; return that key."""
    query = text(
        "SELECT (classid::int8 << 32) | objid::int8 FROM pg_locks "
        "WHERE locktype = 'advisory' AND objsubid = 1 AND NOT granted"
    )
    while True:
        for writer in writers:
            if writer.done():
                writer.result()  # raises what went wrong
                pytest.fail("a writer finished instead of waiting")
        waiting = set((await conn.execute(query)).scalars())
        for key in keys:
            if key in waiting:
                return key
        await asyncio.sleep(0.01)


@dataclass
class Interleaving:
    """What the reader saw in :func:`interleaved`, as (stream, position) pairs."""

    q_waited_for: str  # "the lock" (P's events lock) or "commit" (HOLD_Q, its position drawn)
    first: list[tuple[str, int]]  # read while Q might still commit
    then: list[tuple[str, int]]  # read on from the last position of ``first``, Q committed
    final: list[tuple[str, int]]  # everything the store holds at the end


async def interleaved(url: str) -> Interleaving:
    """P takes its transaction id and first position, then waits; Q appends and
    waits at COMMIT (or, with the lock, waits for P); P goes on and commits;
    a reader by position reads; Q commits; the reader reads on from its last position."""
    async with (
        empty_pg_engine(url) as engine_p,
        empty_pg_engine(url) as engine_q,
        empty_pg_engine(url) as engine_r,
        holding_triggers(engine_r),
    ):
        store = SQLAlchemyEventStore(engine_r)
        async with engine_r.connect() as gate:
            await gate.execute(
                text(f"SELECT pg_advisory_lock({HOLD_P}), pg_advisory_lock({HOLD_Q})")
            )
            writer_p = asyncio.create_task(append_events(engine_p, "p", 2))
            writer_q: asyncio.Task[None] | None = None
            try:
                # 1. P has its transaction id and position k, and waits.
                await asyncio.wait_for(until_waiting(gate, (HOLD_P,), writer_p), WAIT)
                # 2. Q starts: without the lock it draws k+1 and waits at COMMIT;
                #    with the lock it waits for P's events lock.
                writer_q = asyncio.create_task(append_events(engine_q, "q", 1))
                q_waits_on = await asyncio.wait_for(
                    until_waiting(gate, (HOLD_Q, pg_flush.EVENTS_LOCK_KEY), writer_p, writer_q),
                    WAIT,
                )
                # 3. P draws its second position and commits.
                await gate.execute(text(f"SELECT pg_advisory_unlock({HOLD_P})"))
                await asyncio.wait_for(writer_p, WAIT)
                # 4. Q has drawn its position (after P's, with the lock) and waits at COMMIT.
                await asyncio.wait_for(until_waiting(gate, (HOLD_Q,), writer_q), WAIT)
                # 5. The reader reads while Q may still commit.
                first = [(e.aggregate_id, e.position) for e in await store.read_all()]
                last = first[-1][1] if first else 0
                # 6. Q commits; the reader reads on from where it stopped.
                await gate.execute(text(f"SELECT pg_advisory_unlock({HOLD_Q})"))
                await asyncio.wait_for(writer_q, WAIT)
                then = [
                    (e.aggregate_id, e.position) for e in await store.read_all(after_position=last)
                ]
            finally:
                await gate.execute(text("SELECT pg_advisory_unlock_all()"))
                pending = [w for w in (writer_p, writer_q) if w is not None]
                await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), WAIT)
        final = [(e.aggregate_id, e.position) for e in await store.read_all()]
    return Interleaving(
        q_waited_for="the lock" if q_waits_on == pg_flush.EVENTS_LOCK_KEY else "commit",
        first=first,
        then=then,
        final=final,
    )


def without_the_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The adapter's flush statement, its events lock taken out."""
    original = pg_flush.build_flush

    def build(*args: object, **kwargs: object) -> tuple[str, list[object]]:
        sql, params = original(*args, **kwargs)  # type: ignore[arg-type]
        assert "pg_advisory_lock($1::int8)" in sql
        assert "pg_advisory_unlock($1::int8)" in sql
        sql = sql.replace("pg_advisory_lock($1::int8)", "$1::int8")
        return sql.replace("pg_advisory_unlock($1::int8)", "true"), params

    monkeypatch.setattr(pg_flush, "build_flush", build)


@pytest.mark.postgres
async def test_without_the_lock_the_same_reader_misses_an_event_for_good(
    postgres_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    without_the_lock(monkeypatch)

    seen = await interleaved(postgres_database_url)

    assert seen.q_waited_for == "commit"  # Q drew its position while P was in its flush
    assert [stream for stream, _ in seen.final] == ["p", "q", "p"]  # q between P's two
    (q_position,) = [position for stream, position in seen.final if stream == "q"]
    assert seen.first == [e for e in seen.final if e[0] == "p"]  # past q, q pending
    assert seen.then == []  # q committed below the reader's position: missed for good
    assert seen.first[-1][1] > q_position


@pytest.mark.postgres
async def test_with_the_lock_the_same_interleaving_misses_nothing(
    postgres_database_url: str,
) -> None:
    seen = await interleaved(postgres_database_url)

    assert seen.q_waited_for == "the lock"  # Q could not draw a position while P held it
    assert [stream for stream, _ in seen.final] == ["p", "p", "q"]
    assert seen.first + seen.then == seen.final
    assert seen.then == [e for e in seen.final if e[0] == "q"]
