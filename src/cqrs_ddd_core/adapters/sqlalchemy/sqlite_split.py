"""SQLite at ``FULL``: a group's rows written on the event loop, its ``COMMIT`` on the thread.

Every call into ``sqlite3`` releases the GIL, and the writer's thread must
take it back after each one. While the event loop is busy (many senders
running their pipelines) each take-back waits for the loop to let go of the
GIL: up to the interpreter's switch interval (5 ms), for every statement of
every unit of work in a group. So when a commit fsyncs (``synchronous``
``FULL``/``EXTRA`` in WAL mode, ``sqlite_flush="auto"``) and nothing is out on the
writer's thread, the group's writes run inline on the event loop's thread
(``BEGIN IMMEDIATE``, the version checks and the inserts: local work,
microseconds per unit of work, with nobody to hand the GIL to), and only the
``COMMIT``, which waits on the disk, goes to the thread: one hop and one
take-back of the GIL per group, however many statements it wrote. The hop
is a hand-over (:meth:`.sqlite_thread.WriterThread.hand_over`): the loop
lets the thread take the GIL and start the ``COMMIT`` before it goes on, so
the fsync runs while the loop works.

The outcomes are those of :func:`.sqlite_batch.batch_job`, step for step:
the same writing code, the same commit and commit-failure code. Inline, the
connection's busy timeout is 0: when another connection holds the write lock
the write gives up at once, having written nothing, and the whole job goes
to the thread, which waits for the lock as configured. So does a group one
of whose plans failed: it is rolled back and written again on the thread,
each plan in a savepoint, because taking the write lock again could find it
held by another connection.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from cqrs_ddd_core.adapters.sqlalchemy.errors import persistence_error
from cqrs_ddd_core.adapters.sqlalchemy.sqlite_batch import (
    WITHDRAWN,
    Ticket,
    commit_group,
    write_at_once,
)
from cqrs_ddd_core.adapters.sqlalchemy.sqlite_jobs import (
    failed_outcome,
    healthy_in_transaction,
    is_busy,
    rollback,
    stale_snapshot,
)
from cqrs_ddd_core.adapters.sqlalchemy.sqlite_write import (
    SYSTEM,
    InStep,
    now,
    sqlite_timestamp,
    write_plan,
)
from cqrs_ddd_core.persistence.records import StepTiming

if TYPE_CHECKING:
    from datetime import datetime

    from cqrs_ddd_core.adapters.sqlalchemy.plan import FlushPlan
    from cqrs_ddd_core.adapters.sqlalchemy.sqlite_jobs import Outcome

__all__ = ["Written", "commit_written", "write_inline"]

Written = tuple[list["Outcome"], bool]
"""What :func:`write_inline` left: each plan's outcome so far, and whether the
transaction is open and waits for its ``COMMIT`` (``False``: the outcomes are
final, nothing is kept)."""


def write_inline(
    conn: sqlite3.Connection,
    plans: list[FlushPlan],
    tickets: list[Ticket],
    recorded_at: datetime,
) -> Written | None:
    """``BEGIN IMMEDIATE`` and write ``plans`` on the event loop's thread, without
    waiting for any lock; ``None`` (nothing written, no ticket claimed) when
    another connection holds the write lock, or when a plan of a group
    failed: the caller sends the whole job to the thread. Never raises (bar
    an interrupt, after rolling back).
    """
    start = now()
    try:
        conn.execute("BEGIN IMMEDIATE")
    except BaseException as exc:
        if is_busy(exc):
            stale_snapshot(conn, exc)  # (closed: the thread opens a fresh one)
            return None
        began: tuple[str, str | None, int, int] = ("BEGIN", None, 0, start)
        return [failed_outcome(conn, plan, [], exc, began) for plan in plans], False
    begin = StepTiming("BEGIN", None, SYSTEM, start, now())
    claimed = [ticket.claim() for ticket in tickets]
    if not any(claimed):
        rollback(conn)
        return [([], WITHDRAWN) for _ in plans], False
    now_text = sqlite_timestamp(recorded_at)
    if len(plans) == 1:  # alone: as batch_job writes it, no savepoint ever
        timings = [begin]
        try:
            write_plan(conn, plans[0], now_text, timings)
        except InStep as failed:
            step = (failed.operation, failed.collection, failed.rows, failed.start)
            return [failed_outcome(conn, plans[0], timings, failed.exc, step)], False
        return [(timings, None)], True
    outcomes = write_at_once(conn, plans, claimed, now_text, begin)
    if outcomes is None:
        # One of them failed, and the group must be written again, each plan in
        # a savepoint. That takes the write lock afresh, and another connection
        # may take it first between the ROLLBACK and the BEGIN. Inline nothing
        # may wait for a lock, so the thread writes the group again (as
        # batch_job: savepoints, waiting for the lock as configured).
        rollback(conn)
        for ticket, taken in zip(tickets, claimed, strict=True):
            if taken:
                ticket.unclaim()
        return None
    return outcomes, True


def commit_written(
    conn: sqlite3.Connection,
    written_on: sqlite3.Connection | None,
    plans: list[FlushPlan],
    outcomes: list[Outcome],
    deadline: float,
) -> list[Outcome]:
    """On the writer's thread: ``COMMIT`` what :func:`write_inline` wrote on
    ``written_on``; each plan's outcome (a failed ``COMMIT`` is found out as
    in a whole job). Should that connection have been replaced or its
    transaction ended meanwhile, nothing of it was kept: each plan that had
    written is refused, never reported committed."""
    if conn is not written_on or not healthy_in_transaction(conn):
        lost = persistence_error(
            sqlite3.OperationalError("cannot commit - no transaction is active"),
            "The SQLite transaction this commit was written in ended before its COMMIT; "
            "nothing was stored",
        )
        return [(timings, error or lost) for timings, error in outcomes]
    return commit_group(conn, plans, outcomes, deadline)
