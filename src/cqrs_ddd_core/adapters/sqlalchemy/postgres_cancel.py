"""PostgreSQL: what a cancelled commit reports, and a commit sent alone (grouping off).

A caller's cancellation (``asyncio.wait_for``, a cancelled task) must return
promptly even when the server is frozen, and must not claim what it does not
know:

* cancelled before its statement reached a connection: the commit leaves
  (nothing is sent) and the cancellation is raised;
* cancelled after: it waits at most :data:`CANCEL_GRACE` seconds for the
  outcome. Committed: the commit returns and the cancellation reaches the
  caller at its next ``await``. Refused: the cancellation is raised. Unknown,
  or no answer yet: :class:`~cqrs_ddd_core.exceptions.CommitOutcomeUnknownError`
  (the statement goes on, bounded by the engine's limits).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from cqrs_ddd_core.adapters.sqlalchemy.postgres import Attempt, flush_postgres, unknown_outcome
from cqrs_ddd_core.exceptions import CommitOutcomeUnknownError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from cqrs_ddd_core.adapters.sqlalchemy.plan import FlushPlan
    from cqrs_ddd_core.persistence.records import StepTiming

__all__ = ["CANCEL_GRACE", "commit_alone", "deliver"]

CANCEL_GRACE = 0.5
"""Seconds a cancelled commit that was already sent waits for its outcome."""


def deliver(error: BaseException | None, cancelled: asyncio.CancelledError) -> None:
    """A cancelled caller's commit ended with ``error`` (``None``: committed).

    Raises the unknown outcome as such, a refusal as the cancellation; returns
    after a commit, with the cancellation delivered at the caller's next ``await``.
    """
    if isinstance(error, CommitOutcomeUnknownError):
        raise error from cancelled
    if error is not None:
        raise cancelled from None  # nothing was kept: report the cancellation
    current = asyncio.current_task()
    if current is not None:
        current.uncancel()
        current.cancel()


async def commit_alone(engine: AsyncEngine, plan: FlushPlan, timings: list[StepTiming]) -> None:
    """Grouping off: send ``plan``'s statement now (see the module's description).

    Raises:
        ConcurrencyError, PersistenceError, CommitOutcomeUnknownError: as
            :func:`~.postgres.flush_postgres`.
    """
    attempt = Attempt()
    task = asyncio.ensure_future(flush_postgres(engine, plan, timings, attempt=attempt))
    task.add_done_callback(_retrieve)
    try:
        await asyncio.shield(task)
        return
    except asyncio.CancelledError as exc:
        if task.cancelled():  # the flush itself was cancelled (the loop is closing)
            raise
        cancelled = exc
    if not attempt.sent:  # still waiting for a connection: it never will send
        task.cancel()
        raise cancelled
    if not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({task}, timeout=CANCEL_GRACE)
    if not task.done():
        raise unknown_outcome(plan, cancelled) from cancelled
    deliver(None if task.cancelled() else task.exception(), cancelled)


def _retrieve(task: asyncio.Future[None]) -> None:
    """Mark the outcome of a flush its caller stopped waiting for as seen."""
    if not task.cancelled():
        task.exception()
