"""SQLite: the bookkeeping of commits on their way to the writer's thread.

A commit sent to the thread is a :class:`Pending` entry (its plan, its
deadline for the write lock, its ticket, and the outcome once known). A job
on the thread is counted in :class:`Jobs` and leaves what it did in a
:class:`Box`, so that a caller cancelled meanwhile can still learn it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any, TypeVar

from cqrs_ddd_core.adapters.sqlalchemy.errors import persistence_error
from cqrs_ddd_core.adapters.sqlalchemy.sqlite_batch import Ticket
from cqrs_ddd_core.adapters.sqlalchemy.sqlite_outcome import InDoubtError
from cqrs_ddd_core.adapters.sqlalchemy.sqlite_thread import WriterClosedError

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable

    from cqrs_ddd_core.adapters.sqlalchemy.plan import FlushPlan
    from cqrs_ddd_core.adapters.sqlalchemy.sqlite_jobs import Outcome

__all__ = ["NOT_SENT", "Box", "Jobs", "Pending", "counted", "job_done", "settle"]

T = TypeVar("T")

NOT_SENT: Outcome = ([], None)  # the writer was closed: nothing was written


class Jobs:
    """Jobs sent to the writer's thread and jobs it finished (each written by one thread)."""

    __slots__ = ("done", "sent")

    def __init__(self) -> None:
        self.sent = 0  # by the event loop's thread
        self.done = 0  # by the writer's thread, when a job ends


class Box:
    """What one job did on the writer's thread, for a caller cancelled meanwhile."""

    __slots__ = ("done", "ran", "value", "waiter")

    def __init__(self) -> None:
        self.ran = False  # it started
        self.done = False  # it ended (returned or raised)
        self.value: Any = None  # what it returned
        self.waiter: asyncio.Future[None] | None = None  # a caller waiting for the end


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def counted(conn: sqlite3.Connection, jobs: Jobs, box: Box, job: Callable[..., T], *args: Any) -> T:
    """Run ``job(conn, *args)`` on the writer's thread, recording it in ``jobs`` and ``box``."""
    box.ran = True
    try:
        box.value = result = job(conn, *args)
        return result
    finally:
        box.done = True  # first done, then the waiter: job_done sets them the other way round
        jobs.done += 1
        waiter = box.waiter
        if waiter is not None:
            with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits
                waiter.get_loop().call_soon_threadsafe(_wake, waiter)


async def job_done(box: Box) -> None:
    """Wait, through any cancellation, until the job behind ``box`` has ended
    (a job queued on the thread always runs: the thread stops only after
    the jobs queued before its stop)."""
    loop = asyncio.get_running_loop()
    while True:
        waiter = box.waiter = loop.create_future()
        if box.done:
            return
        with contextlib.suppress(asyncio.CancelledError):
            await waiter
        if box.done:
            return


class Pending(Ticket):
    """One unit of work's flush on its way to the thread (alone, or in a group)."""

    __slots__ = ("deadline", "outcome", "plan", "sent", "waiter")

    def __init__(
        self, plan: FlushPlan, waiter: asyncio.Future[None] | None, busy_seconds: float
    ) -> None:
        super().__init__()
        self.plan = plan
        self.waiter = waiter
        self.sent = False
        self.outcome: Outcome | None = None
        self.deadline = time.monotonic() + busy_seconds

    def finish(self, outcome: Outcome | None) -> None:
        """Hand the writer's outcome to the waiting caller (``None``: committed)."""
        self.outcome = NOT_SENT if outcome is None else outcome
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def settle(batch: list[Pending], box: Box, exc: BaseException) -> None:
    """Each entry's outcome when the job's answer did not come back the normal way."""
    if box.done and box.value is not None:  # it ran to its end: its answer stands
        for entry, outcome in zip(batch, box.value, strict=True):
            entry.finish(outcome)
    elif not box.ran:  # never ran (the writer was closed first, or could not open)
        for entry in batch:
            if isinstance(exc, Exception) and not _is_closed(exc):
                entry.finish(([], persistence_error(exc, "SQLite commit failed")))
            else:
                entry.finish(None)  # not sent: the caller opens another writer
    else:  # it ran and raised, which a job never does: look its event ids up
        for entry in batch:
            entry.finish(([], InDoubtError(exc) if isinstance(exc, Exception) else exc))


def _is_closed(exc: BaseException) -> bool:
    return isinstance(exc, WriterClosedError)
