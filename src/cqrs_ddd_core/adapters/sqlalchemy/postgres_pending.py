"""PostgreSQL group commit: a commit waiting in the queue, and how a batch's outcome
reaches each of its commits (see :mod:`.postgres_group`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cqrs_ddd_core.adapters.sqlalchemy.errors import persistence_error
from cqrs_ddd_core.adapters.sqlalchemy.plan import FlushPlan
from cqrs_ddd_core.adapters.sqlalchemy.postgres import step_timings, unknown_outcome
from cqrs_ddd_core.exceptions import PersistenceError

if TYPE_CHECKING:
    import asyncio

    from cqrs_ddd_core.adapters.sqlalchemy.postgres import StatementFailed
    from cqrs_ddd_core.persistence.records import StepTiming

__all__ = ["GroupOutcome", "QueuedCommit", "committed", "copy_error", "fail", "merged"]


class GroupOutcome:
    """What became of one queued commit: its step timings and its error (``None``: committed)."""

    __slots__ = ("error", "timings")

    def __init__(self, timings: list[StepTiming], error: BaseException | None) -> None:
        self.timings, self.error = timings, error


class QueuedCommit:
    """One unit of work's flush, waiting for its statement."""

    __slots__ = ("outcome", "plan", "ripe", "sent", "waiter")

    def __init__(self, plan: FlushPlan, waiter: asyncio.Future[None]) -> None:
        self.plan = plan
        self.waiter = waiter
        self.sent = False
        self.outcome: GroupOutcome | None = None
        self.ripe = 0.0  # when it may go (the loop's clock): lingering, later than queued

    def finish(self, timings: list[StepTiming], error: BaseException | None) -> None:
        """Give this commit its outcome and wake its caller (once)."""
        self.outcome = GroupOutcome(timings, error)
        if not self.waiter.done():
            self.waiter.set_result(None)


def committed(batch: list[QueuedCommit], start: int, end: int) -> None:
    """Tell every entry of ``batch`` it committed. Entries writing as many rows of
    each kind get the same (immutable) step timings, built once."""
    made: dict[tuple[int, int, int, int, int], list[StepTiming]] = {}
    for entry in batch:
        plan = entry.plan
        inserts = sum(1 for write in plan.states.values() if not write.expected_version)
        key = (len(plan.events), len(plan.outbox), len(plan.audit), inserts, len(plan.states))
        timings = made.get(key)
        if timings is None:
            timings = made[key] = step_timings(plan, start, end, None)
        entry.finish(timings, None)


def fail(batch: list[QueuedCommit], failed: StatementFailed) -> None:
    """Give every entry of ``batch`` the failure (one exception object each)."""
    kind = type(failed.error).__name__
    for index, entry in enumerate(batch):
        error = failed.error
        if failed.kind == "unknown":
            error = unknown_outcome(entry.plan, failed.__cause__)
        elif index:
            error = persistence_error(failed.error, "PostgreSQL group commit failed")
        entry.finish(step_timings(entry.plan, failed.start, failed.end, kind), error)


def copy_error(error: PersistenceError, what: str) -> PersistenceError:
    """A fresh copy of ``error`` (its cause kept) for one more caller."""
    copied = PersistenceError(str(error) or what)
    copied.__cause__ = error.__cause__
    return copied


def merged(batch: list[QueuedCommit]) -> FlushPlan:
    """One plan writing every plan of ``batch`` (they share no stream or state row)."""
    whole = FlushPlan()
    for entry in batch:
        plan = entry.plan
        whole.streams.update(plan.streams)
        whole.events.extend(plan.events)
        whole.outbox.extend(plan.outbox)
        whole.audit.extend(plan.audit)
        whole.states.update(plan.states)
    return whole
