"""SQLite: the job the writer's thread runs, for one commit or a group of them.

:func:`batch_job` waits for the write lock (``BEGIN IMMEDIATE``) in short
slices until the commits' deadline, so that a wait is bounded and every
commit whose caller gave up meanwhile can be left out; then it writes each
unit of work the callers still want (:class:`Ticket`), alone or as a group,
and commits once (one fsync at ``FULL``). A group is first written one unit
of work after another, with no savepoint (two statements fewer each, and
each statement is a hand-off of the GIL between the thread and the event
loop); only if one of them fails is the group rolled back and written again,
each in a savepoint of its own (:func:`write_group`).

Each unit of work keeps its own outcome: one that fails (a version conflict,
a duplicate id) is rolled back to its savepoint and the others go on; one
met by its own committed rows is reported committed and writes nothing
(idempotent commits). If the transaction itself is lost (SQLite rolls back
the whole transaction on some errors, such as a full disk), a savepoint
cannot be rolled back, or ``COMMIT`` fails, every unit of work gets the
outcome of the transaction: rolled back, or, for a failed ``COMMIT``, what
looking its event ids up finds (:mod:`.sqlite_outcome`).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from datetime import datetime
from typing import TYPE_CHECKING

from cqrs_ddd_core.adapters.sqlalchemy.errors import persistence_error
from cqrs_ddd_core.adapters.sqlalchemy.sqlite_jobs import (
    Outcome,
    commit_until,
    failed_outcome,
    healthy_in_transaction,
    is_busy,
    rollback,
    settle_conflict,
    stale_snapshot,
    translate,
    write_and_commit,
)
from cqrs_ddd_core.adapters.sqlalchemy.sqlite_outcome import (
    InDoubtError,
    outcome_after_failed_commit,
)
from cqrs_ddd_core.adapters.sqlalchemy.sqlite_thread import healthy
from cqrs_ddd_core.adapters.sqlalchemy.sqlite_write import (
    SYSTEM,
    Failure,
    InStep,
    now,
    sqlite_timestamp,
    write_plan,
)
from cqrs_ddd_core.persistence.records import StepTiming

if TYPE_CHECKING:
    from cqrs_ddd_core.adapters.sqlalchemy.plan import FlushPlan

__all__ = [
    "SLICE_MS",
    "WITHDRAWN",
    "Ticket",
    "batch_job",
    "commit_group",
    "write_at_once",
    "write_group",
]

SLICE_MS = 50
"""The writer's thread waits for another connection's write lock in slices of
this many milliseconds (SQLite's busy handler), checking between slices the
commits' deadline and whether any caller still wants its commit."""

_claims = threading.Lock()


class _Withdrawn(Exception):
    """The caller left before its commit was written: nothing of it was."""


WITHDRAWN = _Withdrawn()


class Ticket:
    """Whether one commit may still be written: claimed by the writer's thread
    when it starts writing it, or withdrawn by its caller before that."""

    __slots__ = ("_state",)

    def __init__(self) -> None:
        self._state = 0  # 0 waiting, 1 being written, 2 withdrawn

    def claim(self) -> bool:
        """On the writer's thread: take the commit, unless its caller left."""
        with _claims:
            if self._state == 0:
                self._state = 1
                return True
            return False

    def unclaim(self) -> None:
        """Give back a claim whose writing was undone before anything of it was
        kept (see :func:`.sqlite_split.write_inline`): the commit waits again."""
        with _claims:
            if self._state == 1:
                self._state = 0

    def withdraw(self) -> bool:
        """On the event loop: leave, unless the writing has begun (``False`` then)."""
        with _claims:
            if self._state == 0:
                self._state = 2
                return True
            return False

    @property
    def wanted(self) -> bool:
        """Whether the caller still waits for it."""
        return self._state != 2


def batch_job(
    conn: sqlite3.Connection,
    plans: list[FlushPlan],
    tickets: list[Ticket],
    recorded_at: datetime,
    deadline: float,
    slice_ms: int | None,
) -> list[Outcome]:
    """Write ``plans`` (one, or a group) in one transaction; each its own outcome.

    ``deadline`` (``time.monotonic()``): wait for the write lock until then.
    ``slice_ms``: the busy timeout to wait with (for a writer that flushes
    inline, whose timeout is 0; restored after); ``None``: the connection's
    own. A plan whose ticket was withdrawn gets :data:`WITHDRAWN`. Never
    raises (bar an interrupt).
    """
    try:
        if slice_ms is not None:
            conn.execute(f"PRAGMA busy_timeout={int(slice_ms)}")
        return _batch(conn, plans, tickets, recorded_at, deadline)
    except BaseException as exc:  # a bug or a dead connection: nothing may stay half done
        rollback(conn)
        if not isinstance(exc, Exception):
            raise
        return [([], persistence_error(exc, "SQLite commit failed")) for _ in plans]
    finally:
        if slice_ms is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA busy_timeout=0")


def _begin(conn: sqlite3.Connection, tickets: list[Ticket], deadline: float | None) -> None:
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if (
                not is_busy(exc)
                or deadline is None
                or time.monotonic() >= deadline
                or stale_snapshot(conn, exc)
            ):
                raise
            if not any(ticket.wanted for ticket in tickets):
                raise  # every caller left: nobody waits for this lock any more


def _batch(
    conn: sqlite3.Connection,
    plans: list[FlushPlan],
    tickets: list[Ticket],
    recorded_at: datetime,
    deadline: float,
) -> list[Outcome]:
    now_text = sqlite_timestamp(recorded_at)
    start = now()
    try:
        _begin(conn, tickets, deadline)
    except BaseException as exc:
        return [failed_outcome(conn, plan, [], exc, ("BEGIN", None, 0, start)) for plan in plans]
    begin = StepTiming("BEGIN", None, SYSTEM, start, now())
    if len(plans) == 1:  # alone: no savepoint
        if not tickets[0].claim():
            rollback(conn)
            return [([], WITHDRAWN)]
        return [write_and_commit(conn, plans[0], now_text, [begin], deadline)]
    claimed = [ticket.claim() for ticket in tickets]
    outcomes, open_ = write_group(conn, plans, claimed, now_text, begin, tickets, deadline)
    if not open_:
        return outcomes
    return commit_group(conn, plans, outcomes, deadline)


def write_group(
    conn: sqlite3.Connection,
    plans: list[FlushPlan],
    claimed: list[bool],
    now_text: str,
    begin: StepTiming,
    tickets: list[Ticket],
    deadline: float,
) -> tuple[list[Outcome], bool]:
    """Write the claimed ``plans`` in the transaction just begun: all at once,
    or, if one fails, again each in a savepoint. Returns each plan's outcome
    so far and whether the transaction waits for its ``COMMIT`` (``False``:
    rolled back, the outcomes are final). ``deadline``: until when to wait
    for the write lock again (another connection may take it between the
    ``ROLLBACK`` and the ``BEGIN``). Never raises (bar an interrupt).
    """
    outcomes = write_at_once(conn, plans, claimed, now_text, begin)
    if outcomes is None:
        # One of them failed: undo the lot and write each in a savepoint of
        # its own, so that each gets its own outcome.
        rollback(conn)
        start = now()
        try:
            _begin(conn, tickets, deadline)
        except BaseException as exc:
            step = ("BEGIN", None, 0, start)
            return [
                failed_outcome(conn, plan, [], exc, step) if wanted else ([], WITHDRAWN)
                for plan, wanted in zip(plans, claimed, strict=True)
            ], False
        begin = StepTiming("BEGIN", None, SYSTEM, start, now())
        outcomes, lost = _group_in_savepoints(conn, plans, claimed, now_text, begin)
        if lost:  # the transaction was lost: every outcome is final
            return outcomes, False
    if all(error is not None for _, error in outcomes):
        rollback(conn)  # nothing to keep: leave no transaction, wait for nobody
        return outcomes, False
    return outcomes, True


def commit_group(
    conn: sqlite3.Connection,
    plans: list[FlushPlan],
    outcomes: list[Outcome],
    deadline: float | None,
) -> list[Outcome]:
    """``COMMIT`` the group written by :func:`write_group`; each plan's outcome."""
    start = now()
    try:
        commit_until(conn, deadline)
    except BaseException as exc:
        return _commit_failed(conn, plans, outcomes, exc, start)
    commit = StepTiming("COMMIT", None, SYSTEM, start, now())
    for timings, error in outcomes:
        if error is None:
            timings.append(commit)
    return outcomes


def write_at_once(
    conn: sqlite3.Connection,
    plans: list[FlushPlan],
    claimed: list[bool],
    now_text: str,
    begin: StepTiming,
) -> list[Outcome] | None:
    """Write every claimed plan in the open transaction, one after another, with
    no savepoint: two statements fewer per plan, each a hand-off of the GIL
    between the writer's thread and the event loop. ``None`` if any plan
    fails (the caller rolls back and writes them again in savepoints, so the
    happy path pays nothing for a failure it does not have)."""
    outcomes: list[Outcome] = []
    for plan, wanted in zip(plans, claimed, strict=True):
        if not wanted:
            outcomes.append(([], WITHDRAWN))
            continue
        timings = [begin]
        try:
            write_plan(conn, plan, now_text, timings)
        except InStep as failed:
            if not isinstance(failed.exc, Exception):
                raise failed.exc from None  # an interrupt: nothing of the group stays
            return None
        outcomes.append((timings, None))
    return outcomes


def _group_in_savepoints(
    conn: sqlite3.Connection,
    plans: list[FlushPlan],
    claimed: list[bool],
    now_text: str,
    begin: StepTiming,
) -> tuple[list[Outcome], bool]:
    """Write each claimed plan in a savepoint of its own: one that fails is rolled
    back to it, alone, with its own outcome. Returns the outcomes, and whether
    the transaction itself was lost (then they are final: nothing commits)."""
    outcomes: list[Outcome] = []
    for index, (plan, wanted) in enumerate(zip(plans, claimed, strict=True)):
        if not wanted:
            outcomes.append(([], WITHDRAWN))
            continue
        timings = [begin]
        savepoint = f"cqrs_ddd_plan_{index}"  # one name per plan: none can undo another
        try:
            conn.execute(f"SAVEPOINT {savepoint}")
            write_plan(conn, plan, now_text, timings)
            conn.execute(f"RELEASE {savepoint}")
        except BaseException as exc:
            failed = exc if isinstance(exc, InStep) else InStep(exc, "INSERT", None, 0, now())
            try:
                if not isinstance(failed.exc, Exception):
                    raise failed.exc  # an interrupt: nothing of the group stays
                conn.execute(f"ROLLBACK TO {savepoint}")
                conn.execute(f"RELEASE {savepoint}")
                if not conn.in_transaction:
                    raise failed.exc  # SQLite rolled the whole transaction back
                error: BaseException | None = (
                    failed.exc.error
                    if isinstance(failed.exc, Failure)
                    else translate(conn, plan, failed.exc)
                )
                if error is not None:
                    error = settle_conflict(conn, plan, error)  # its own rows, committed before?
            except BaseException:
                # The transaction is gone, or cannot be trusted: roll it all back.
                return _all_failed(conn, plans, outcomes, timings, failed, index), True
            kind = None if error is None else type(error).__name__
            timings.append(
                StepTiming(
                    failed.operation, failed.collection, SYSTEM, failed.start, now(),
                    failed.rows, kind,
                )
            )  # fmt: skip
            outcomes.append((timings, error))
            continue
        outcomes.append((timings, None))
    return outcomes, False


def _commit_failed(
    conn: sqlite3.Connection,
    plans: list[FlushPlan],
    outcomes: list[Outcome],
    exc: BaseException,
    start: int,
) -> list[Outcome]:
    """The group's ``COMMIT`` failed: each plan that had written gets the
    transaction's outcome, learnt as :func:`.sqlite_jobs.commit_failed` does."""
    still_open = is_busy(exc) and healthy_in_transaction(conn)
    rollback(conn)
    results: list[Outcome] = []
    for plan, (timings, error) in zip(plans, outcomes, strict=True):
        if error is not None:
            results.append((timings, error))
            continue
        found: BaseException | None
        if still_open:
            found = persistence_error(exc, "SQLite COMMIT failed; nothing was stored")
        elif not isinstance(exc, Exception):
            found = exc
        elif healthy(conn):
            found = outcome_after_failed_commit(conn, plan, exc)
        else:
            found = InDoubtError(exc)
        kind = None if found is None else type(found).__name__
        timings.append(StepTiming("COMMIT", None, SYSTEM, start, now(), 0, kind))
        results.append((timings, found))
    return results


def _all_failed(
    conn: sqlite3.Connection,
    plans: list[FlushPlan],
    outcomes: list[Outcome],
    timings: list[StepTiming],
    failed: InStep,
    index: int,
) -> list[Outcome]:
    """The transaction was lost while writing ``plans[index]``: roll back; every
    plan written in it failed (one met by its own rows, committed before, did not)."""
    step = (failed.operation, failed.collection, failed.rows, failed.start)
    this = failed_outcome(conn, plans[index], timings, failed.exc, step)
    if not isinstance(failed.exc, Exception):
        raise failed.exc  # an interrupt travels on (the transaction is rolled back)
    cause = this[1] if this[1] is not None else failed.exc
    what = "SQLite rolled back the transaction this commit shared"
    earlier: list[Outcome] = [
        (done, error) if error is not None else (done[:1], persistence_error(cause, what))
        for done, error in outcomes
    ]
    later: list[Outcome] = [([], persistence_error(cause, what)) for _ in plans[index + 1 :]]
    return [*earlier, this, *later]
