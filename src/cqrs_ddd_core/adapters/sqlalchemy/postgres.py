"""PostgreSQL: the whole flush is one statement, committed in the same round trip.

**One round trip.** The unit of work sends a single statement whose
data-modifying CTEs write every table (``INSERT ... SELECT FROM
jsonb_array_elements($n::jsonb) ...``, one JSON parameter per table): its text
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

**No lock held while waiting on another transaction.** Before the events
lock, the statement takes a transaction-scoped lock per stream it appends to
(``pg_advisory_xact_lock``, in key order, so two flushes never wait on each
other in a cycle), held until its transaction ends. A flush meeting another
one's uncommitted rows of the same stream (stalled in its commit, say) waits
there, *without* the events lock, so appends to other streams go on. Writers
that insert into ``events`` without this adapter bypass that protection.

The lock is session-level so that it can be released before the commit; if
the statement fails after taking it, the adapter releases it
(``pg_advisory_unlock_all()``) before the connection goes back to the pool,
or drops the connection; if the connection was lost, the old server process
is ended (:mod:`.postgres_outcome`), which releases it.

**Outcomes.** A refused statement wrote nothing; a lost connection is
followed by finding out what the server did (:mod:`.postgres_outcome`); an
event id clash decides whether the unit of work committed before. Bounded by
the engine's ``postgres_commit_timeout`` and ``postgres_resolve_timeout``
(:mod:`.postgres_settings`).

**Wake-ups.** The statement sends no ``NOTIFY``: a transaction that notifies
commits only in its turn with every other one that does, WAL flush
included. Once a commit is known to have committed, the engine's
:class:`~.postgres_notify.CommitNotifier` is told and sends the wake-ups
afterwards, in a transaction of its own, at most one at a time per engine,
without the caller waiting for it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy.util import await_only, greenlet_spawn

from cqrs_ddd_core.adapters.sqlalchemy.errors import (
    concurrency_error,
    is_concurrency_signal,
    is_connection_lost,
    is_replayed_event,
    persistence_error,
)
from cqrs_ddd_core.adapters.sqlalchemy.postgres_notify import notifier_for
from cqrs_ddd_core.adapters.sqlalchemy.postgres_outcome import (
    BACKEND_KEY,
    REPLAYED,
    BackendIdentity,
    replay_outcome,
    resolve,
)
from cqrs_ddd_core.adapters.sqlalchemy.postgres_settings import settings_of
from cqrs_ddd_core.adapters.sqlalchemy.postgres_statement import EVENTS_LOCK_KEY, build_flush
from cqrs_ddd_core.exceptions import CommitOutcomeUnknownError, PersistenceError
from cqrs_ddd_core.persistence.records import StepTiming

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

    from cqrs_ddd_core.adapters.sqlalchemy.plan import FlushPlan

__all__ = [
    "EVENTS_LOCK_KEY",
    "Attempt",
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

    ``kind`` says what is known of the outcome:

    * ``"unsent"``: no connection could be had; nothing was sent;
    * ``"refused"``: PostgreSQL answered with an error; the statement, hence
      its transaction, failed as a whole and nothing was written;
    * ``"absent"``: the connection was lost and, looking afterwards, nothing
      was written;
    * ``"unknown"``: the connection was lost and what the server did could not
      be learnt (the error is a :class:`CommitOutcomeUnknownError`).
    """

    def __init__(self, error: BaseException, start: int, end: int, *, kind: str) -> None:
        super().__init__(str(error))
        self.error, self.start, self.end, self.kind = error, start, end, kind

    @property
    def written_nothing(self) -> bool:
        """True unless the outcome is unknown: the statement wrote nothing."""
        return self.kind != "unknown"


class Attempt:
    """One statement on its way: whether it reached a connection, and which server
    process ran it (to end that process if the connection is lost)."""

    __slots__ = ("backend", "diagnose", "plan", "sent")

    def __init__(self, diagnose: bool = True) -> None:
        self.sent = False
        self.diagnose = diagnose
        self.plan: FlushPlan | None = None
        self.backend: BackendIdentity | None = None


class _Lost(Exception):
    """The connection failed after the statement was sent (inside the greenlet)."""


PlanSource = Callable[[], "FlushPlan | None"]


def _flush_in_greenlet(engine: Engine, source: PlanSource, attempt: Attempt) -> tuple[int, int]:
    # One greenlet for checkout, statement and checkin: each greenlet_spawn
    # costs about as much as the pool work itself.
    start = time.time_ns()
    try:
        fairy = engine.raw_connection()
    except Exception as exc:  # no connection (server down, pool timeout): nothing was sent
        unsent = persistence_error(exc, "PostgreSQL connection failed before the commit was sent")
        raise StatementFailed(unsent, start, time.time_ns(), kind="unsent") from exc
    try:
        # The plan is taken only now: a commit counts as sent once it is on a
        # connection, and one cancelled before that leaves without a trace.
        plan = source()
        if plan is None:
            return start, start
        diagnose = attempt.diagnose
        try:
            sql, args = build_flush(plan)
        except Exception as exc:  # a value PostgreSQL cannot take: nothing was sent
            error = persistence_error(exc, "PostgreSQL flush could not be encoded")
            raise StatementFailed(error, start, time.time_ns(), kind="unsent") from exc
        attempt.plan, attempt.backend, attempt.sent = plan, fairy.info.get(BACKEND_KEY), True
        conn: Any = fairy.driver_connection
        start = time.time_ns()
        try:
            await_only(conn.fetchval(sql, *args))
            return start, time.time_ns()
        except Exception as exc:
            end = time.time_ns()
            if is_connection_lost(exc):  # it may have run, and committed: find out
                fairy.invalidate(exc)
                raise _Lost() from exc
            if plan.events:
                await_only(_release_lock(fairy, conn))
            failure: BaseException | str | None = None
            replay = is_replayed_event(exc)
            if (replay or is_concurrency_signal(exc)) and diagnose:
                # Committed before (a retried command)? Then there is nothing to write.
                try:
                    failure = await_only(replay_outcome(conn, plan, exc))
                except Exception as lookup:  # the refusal is certain; its reason is not
                    if is_connection_lost(lookup):
                        fairy.invalidate(lookup)
                    failure = None
                if failure == REPLAYED:
                    return start, end
            if not isinstance(failure, BaseException):
                if is_concurrency_signal(exc):
                    failure = (
                        await_only(_diagnose(conn, plan, exc))
                        if diagnose
                        else concurrency_error("?", 0, None, exc)
                    )
                else:
                    failure = persistence_error(exc, "PostgreSQL flush failed")
            raise StatementFailed(failure, start, end, kind="refused") from exc
    except BaseException as exc:
        # Cancelled mid-statement (a deadline, the loop closing): the connection's
        # state is unknown, so it is dropped (which also releases any lock).
        if not isinstance(exc, Exception) and attempt.sent and fairy.is_valid:
            fairy.invalidate()
        raise
    finally:
        fairy.close()


async def run_flush(
    engine: AsyncEngine,
    plan: FlushPlan | PlanSource,
    *,
    diagnose: bool = True,
    attempt: Attempt | None = None,
) -> tuple[int, int]:
    """Write and commit ``plan`` in one round trip; the statement's start and end.

    ``plan`` may be a function giving the plan once a connection is at hand
    (``None``: nothing to send; it may set ``attempt.diagnose``).
    ``diagnose=False`` skips asking which stream
    moved after a conflict, and whether a clash on event ids is a unit of work
    committed before (the caller sends the plans again one by one).

    The statement is bounded by the engine's commit timeout; a lost
    connection or a timeout after the statement was sent is followed by
    finding out whether it committed (bounded by the resolve timeout).

    Raises:
        StatementFailed: carrying the :class:`ConcurrencyError`,
            :class:`PersistenceError` or :class:`CommitOutcomeUnknownError`,
            the statement's times and what is known of the outcome.
    """
    source: PlanSource = plan if callable(plan) else (lambda: plan)
    attempt = Attempt(diagnose) if attempt is None else attempt
    settings = settings_of(engine)
    start = time.time_ns()
    try:
        async with asyncio.timeout(settings.commit_timeout):
            times = await greenlet_spawn(_flush_in_greenlet, engine.sync_engine, source, attempt)
        _committed(engine, attempt.plan)
        return times
    except TimeoutError as exc:
        if not attempt.sent:
            unsent = PersistenceError(
                f"PostgreSQL commit not sent: no connection within {settings.commit_timeout} s"
            )
            raise StatementFailed(unsent, start, time.time_ns(), kind="unsent") from exc
        cause: BaseException = exc
    except _Lost as lost:
        cause = lost.__cause__ or lost
    sent = attempt.plan
    assert sent is not None
    end = time.time_ns()
    committed = await resolve(engine, sent, attempt.backend, settings.resolve_timeout)
    if committed:
        _committed(engine, sent)
        return start, end
    if committed is False:
        error = persistence_error(cause, "PostgreSQL connection lost; the commit was not stored")
        raise StatementFailed(error, start, end, kind="absent") from cause
    unknown = unknown_outcome(sent, cause)
    raise StatementFailed(unknown, start, end, kind="unknown") from cause


def _committed(engine: AsyncEngine, plan: FlushPlan | None) -> None:
    """Wake the listeners of what ``plan`` wrote, after its commit, without waiting."""
    if plan is not None and (plan.events or plan.outbox):
        notifier_for(engine).committed(engine, events=bool(plan.events), outbox=bool(plan.outbox))


def unknown_outcome(plan: FlushPlan, cause: BaseException | None) -> CommitOutcomeUnknownError:
    """The error for a commit of ``plan`` whose outcome is unknown (the caller's
    unit of work fills in the message id)."""
    detail = "" if cause is None else f": {type(cause).__name__}: {str(cause).strip()[:200]}"
    error = CommitOutcomeUnknownError(
        f"PostgreSQL commit outcome unknown (connection lost after the commit was sent){detail}",
        event_ids=[event.event_id for event in plan.events],
    )
    error.__cause__ = cause
    return error


async def flush_postgres(
    engine: AsyncEngine,
    plan: FlushPlan,
    timings: list[StepTiming],
    *,
    attempt: Attempt | None = None,
) -> None:
    """Write and commit ``plan`` in one round trip; append the measured steps.

    Raises:
        ConcurrencyError: a stream or state row was not at the expected version.
        CommitOutcomeUnknownError: the connection was lost and the outcome
            could not be learnt.
        PersistenceError: any other database failure (nothing was written).
    """
    try:
        start, end = await run_flush(engine, plan, attempt=attempt)
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
