"""PostgreSQL: the whole flush is one statement, committed in the same round trip.

**One round trip.** The unit of work sends a single statement whose
data-modifying CTEs write every table (``INSERT ... SELECT FROM
json_to_recordset($n::json) ...``, one JSON parameter per table): its text
depends only on which tables are written, so it is built once per shape and
asyncpg prepares it once per connection. It runs outside an explicit
transaction, so PostgreSQL commits it on its own: flush and commit cost one
round trip, and nothing stays open while the network is in between.

**Version checks inside the statement.** A stream whose head is not the
expected version, or a state row no longer at the version it was loaded at,
makes the statement fail on purpose (casting a text carrying
:data:`~.errors.CONFLICT_MARKER` to integer), which rolls everything back.
The unique ``(aggregate_type, aggregate_id, version)`` constraint and the
state table's primary key catch writers that race past the check. The
adapter then asks which stream moved and raises :class:`ConcurrencyError`.

**Gap-free global order.** Concurrent transactions commit in any order, so a
reader by position could see 12 committed while 11 is still in flight, move
its checkpoint past 11 and miss it for ever. Two parts prevent it:

1. *Positions follow transaction ids.* A flush with events takes an advisory
   lock (:data:`EVENTS_LOCK_KEY`), inserts its events, each stamped with
   ``pg_current_xact_id()`` (the statement's first write, so its transaction
   id is assigned right there), and releases the lock, all inside the one
   statement; its other writes depend on the release, so they come after.
   Between two flushes, the one with the smaller transaction id therefore
   has the smaller positions.
2. *Readers stop below the oldest running transaction.* ``read_all`` and
   ``latest_position`` return only events whose transaction id is below
   ``pg_snapshot_xmin(pg_current_snapshot())``: every transaction with a
   smaller id has ended, so by (1) every smaller position is final, committed
   or rolled back (a rolled-back flush leaves a hole no one will ever fill).

The lock covers the event inserts only, never the commit (the WAL flush) and
never a network round trip: commits of concurrent flushes proceed, and
group-commit, in parallel, so throughput grows with concurrent senders.
Flushes without events take no lock. The price is on the reading side: an
event becomes readable by position once every older transaction of the
*cluster* has ended, so a long-running writing transaction (a migration, a
batch job) holds projections back until it ends; ``load_stream`` is not
affected. (Holding a transaction-scoped lock until commit instead would
serialise every commit with events, WAL flush included, and cap the event
throughput at about one commit per WAL flush.)

The lock is session-level so that it can be released before the commit; if
the statement fails after taking it, the adapter releases it
(``pg_advisory_unlock_all()``) before the connection goes back to the pool,
or drops the connection.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from sqlalchemy.util import await_only, greenlet_spawn

from cqrs_ddd_core.adapters.sqlalchemy.errors import (
    concurrency_error,
    is_concurrency_signal,
    persistence_error,
    sqlstate,
)
from cqrs_ddd_core.adapters.sqlalchemy.postgres_statement import EVENTS_LOCK_KEY, build_flush
from cqrs_ddd_core.exceptions import PersistenceError
from cqrs_ddd_core.persistence.records import StepTiming

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

    from cqrs_ddd_core.adapters.sqlalchemy.plan import FlushPlan

__all__ = [
    "EVENTS_LOCK_KEY",
    "StatementFailed",
    "build_flush",
    "flush_postgres",
    "run_flush",
    "step_timings",
]

SYSTEM = "postgresql"


def step_timings(plan: FlushPlan, start: int, end: int, error_type: str | None) -> list[StepTiming]:
    """One step per table written, all spanning the statement (they ran in it),
    and, when it succeeded, a zero-length COMMIT where it ended (the commit was
    part of it)."""
    steps: list[tuple[str, str, int]] = []
    if plan.events:
        steps.append(("INSERT", "events", len(plan.events)))
    if plan.outbox:
        steps.append(("INSERT", "outbox", len(plan.outbox)))
    if plan.audit:
        steps.append(("INSERT", "audit_log", len(plan.audit)))
    inserts, updates = plan.state_inserts, plan.state_updates
    if inserts:
        steps.append(("INSERT", "aggregate_state", len(inserts)))
    if updates:
        steps.append(("UPDATE", "aggregate_state", len(updates)))
    timings = [
        StepTiming(op, table, SYSTEM, start, end, rows, error_type) for op, table, rows in steps
    ]
    if error_type is None:  # a failed statement committed nothing: the unit of work adds ROLLBACK
        timings.append(StepTiming("COMMIT", None, SYSTEM, end, end, 0))
    return timings


class StatementFailed(Exception):
    """Carries the translated error and when the statement ended out of the greenlet.

    ``written_nothing`` is true when PostgreSQL answered with an error (the
    statement, hence its transaction, failed as a whole) or the statement was
    never sent; false when the connection failed on the way and the outcome
    is unknown. ``sent``: whether the statement reached the connection.
    """

    def __init__(
        self,
        error: BaseException,
        start: int,
        end: int,
        *,
        written_nothing: bool,
        sent: bool = True,
    ) -> None:
        super().__init__(str(error))
        self.error, self.start, self.end = error, start, end
        self.written_nothing = written_nothing
        self.sent = sent


def _flush_in_greenlet(
    engine: Engine, plan: FlushPlan, sql: str, args: list[Any], diagnose: bool
) -> tuple[int, int]:
    # One greenlet for checkout, statement and checkin: each greenlet_spawn
    # costs about as much as the pool work itself.
    start = time.time_ns()
    try:
        fairy = engine.raw_connection()
    except Exception as exc:  # no connection (server down, pool timeout): nothing was sent
        unsent = persistence_error(exc, "PostgreSQL connection failed before the commit was sent")
        raise StatementFailed(
            unsent, start, time.time_ns(), written_nothing=True, sent=False
        ) from exc
    conn: Any = fairy.driver_connection
    start = time.time_ns()
    try:
        await_only(conn.fetchval(sql, *args))
        return start, time.time_ns()
    except Exception as exc:
        end = time.time_ns()
        error: BaseException
        if sqlstate(exc) is None:  # the connection itself failed: the outcome is unknown
            fairy.invalidate(exc)
            error = persistence_error(exc, "PostgreSQL connection failed during commit")
            raise StatementFailed(error, start, end, written_nothing=False) from exc
        if plan.events:
            await_only(_release_lock(fairy, conn))
        if is_concurrency_signal(exc):
            error = (
                await_only(_diagnose(conn, plan, exc))
                if diagnose
                else concurrency_error("?", 0, None, exc)
            )
        else:
            error = persistence_error(exc, "PostgreSQL flush failed")
        raise StatementFailed(error, start, end, written_nothing=True) from exc
    except BaseException:  # cancelled mid-statement: the connection's state is unknown
        fairy.invalidate()
        raise
    finally:
        fairy.close()


async def run_flush(
    engine: AsyncEngine, plan: FlushPlan, *, diagnose: bool = True
) -> tuple[int, int]:
    """Write and commit ``plan`` in one round trip; the statement's start and end.

    ``diagnose=False`` skips asking which stream moved after a conflict (the
    caller will find out otherwise).

    Raises:
        StatementFailed: carrying the :class:`ConcurrencyError` or
            :class:`PersistenceError` and the statement's times.
    """
    sql, args = build_flush(plan)
    return await greenlet_spawn(_flush_in_greenlet, engine.sync_engine, plan, sql, args, diagnose)


async def flush_postgres(engine: AsyncEngine, plan: FlushPlan, timings: list[StepTiming]) -> None:
    """Write and commit ``plan`` in one round trip; append the measured steps.

    Raises:
        ConcurrencyError: a stream or state row was not at the expected version.
        PersistenceError: any other database failure (nothing was written).
    """
    try:
        start, end = await run_flush(engine, plan)
    except StatementFailed as failed:
        timings.extend(step_timings(plan, failed.start, failed.end, type(failed.error).__name__))
        raise failed.error from failed.__cause__
    timings.extend(step_timings(plan, start, end, None))


async def _release_lock(fairy: Any, conn: Any) -> None:
    """The statement failed, maybe holding the events lock: release it, or drop the
    connection (which releases it too) so that no other flush waits for ever."""
    try:
        await conn.execute("SELECT pg_advisory_unlock_all()")
    except Exception as exc:
        fairy.invalidate(exc)


_STREAM_HEADS = (
    "SELECT u.t, u.i, (SELECT max(e.version) FROM events e "
    "WHERE e.aggregate_type = u.t AND e.aggregate_id = u.i) "
    "FROM unnest($1::text[], $2::text[]) AS u(t, i)"
)
_STATE_VERSIONS = (
    "SELECT u.t, u.i, (SELECT s.version FROM aggregate_state s "
    "WHERE s.aggregate_type = u.t AND s.aggregate_id = u.i) "
    "FROM unnest($1::text[], $2::text[]) AS u(t, i)"
)


async def _diagnose(conn: Any, plan: FlushPlan, cause: BaseException) -> PersistenceError:
    """Which stream or state row moved (the failed statement left nothing behind)."""
    checks: tuple[tuple[str, list[Any]], ...] = (
        (_STREAM_HEADS, list(plan.streams.values())),
        (_STATE_VERSIONS, list(plan.states.values())),
    )
    try:
        for query, writes in checks:
            if not writes:
                continue
            rows = await conn.fetch(
                query,
                [w.aggregate_type for w in writes],
                [w.aggregate_id for w in writes],
            )
            found = {(r[0], r[1]): r[2] or 0 for r in rows}
            for w in writes:
                actual = found.get((w.aggregate_type, w.aggregate_id), 0)
                if actual != w.expected_version:
                    return concurrency_error(w.stream, w.expected_version, actual, cause)
    except Exception:  # the diagnosis is best effort; the conflict itself is certain
        pass
    first = next(iter(plan.streams.values()), None)
    if first is not None:
        return concurrency_error(first.stream, first.expected_version, None, cause)
    write = next(iter(plan.states.values()), None)
    if write is not None:
        return concurrency_error(write.stream, write.expected_version, None, cause)
    return persistence_error(cause, "PostgreSQL flush failed")
