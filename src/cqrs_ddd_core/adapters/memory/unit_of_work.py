"""An in-memory unit of work that is genuinely transactional.

Writers (the in-memory stores) first *prepare* their staged records, checking
everything that could fail (versions, duplicate ids); only when every writer
has prepared are the changes applied, with no ``await`` in between, so a
failure anywhere leaves every store as it was.

Before that, a unit of work whose staged event ids are all stored already,
each in the stream it appends to, committed before (a retried command): it
writes nothing and succeeds. Some but not all stored: ``ConcurrencyError``
naming the stream (the rule every adapter follows: "Commit outcomes" in
``docs/persistence.md``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

from cqrs_ddd_core.exceptions import ConcurrencyError
from cqrs_ddd_core.persistence.records import StepTiming, stream_name
from cqrs_ddd_core.persistence.unit_of_work import BaseUnitOfWork, StagedGroup

__all__ = ["InMemoryUnitOfWork", "MemoryWriter"]


class MemoryWriter(Protocol):
    """What an in-memory store offers its unit of work."""

    collection: str
    operation: str

    def prepare(self, records: list[Any]) -> Callable[[], None]:
        """Check ``records`` against committed data; return the function that applies them."""
        ...


class InMemoryUnitOfWork(BaseUnitOfWork):
    """A unit of work over the in-memory stores. ``InMemoryUnitOfWork`` is its own factory."""

    system: ClassVar[str] = "memory"

    async def commit(self) -> None:
        """Commit; with nothing staged and no after-commit hook, without the general path.

        A command that wrote nothing (a read-only command, a refusal handled
        in the handler) ends here: the same end state as
        :meth:`BaseUnitOfWork.commit` reaches for it (committed, nothing
        written, no step measured, rollback hooks dropped), without grouping
        empty slots or awaiting a write that has nothing to do.
        """
        if self._state != "open" or self._after_commit or any(self._slots):
            await super().commit()
            return
        self._state = "committed"
        self.committed = []
        self._slots.clear()
        if self._after_rollback:
            self._after_rollback = []

    async def _write_and_commit(self, groups: list[StagedGroup]) -> None:
        if not groups:
            # Nothing to write: no step to measure (no COMMIT span or latency
            # for a command that persisted nothing).
            return
        if _committed_before(groups):
            return
        appliers: list[Callable[[], None]] = []
        for writer, records in groups:
            start = time.time_ns()
            try:
                appliers.append(writer.prepare(records))
            except Exception as exc:
                self.timings.append(
                    StepTiming(
                        writer.operation,
                        writer.collection,
                        self.system,
                        start,
                        time.time_ns(),
                        len(records),
                        type(exc).__name__,
                    )
                )
                raise
            self.timings.append(
                StepTiming(
                    writer.operation,
                    writer.collection,
                    self.system,
                    start,
                    time.time_ns(),
                    len(records),
                )
            )
        start = time.time_ns()
        for apply in appliers:
            apply()
        self.timings.append(StepTiming("COMMIT", None, self.system, start, time.time_ns()))

    async def _discard(self) -> None:
        return None


def _committed_before(groups: list[StagedGroup]) -> bool:
    """True when every staged event id is stored in the stream it is appended to;
    :class:`ConcurrencyError` when only some are (``False``: no event, or none
    stored, or one stored elsewhere: ``prepare`` refuses that)."""
    total = stored = 0
    partial: tuple[str, int] | None = None  # a stream with stored ids, its expected version
    for writer, records in groups:
        lookup = getattr(writer, "stored_stream", None)
        if lookup is None:
            continue
        for aggregate_type, aggregate_id, expected, pending in records:
            key = (aggregate_type, aggregate_id)
            for row in pending:
                total += 1
                found = lookup(row.event_id)
                if found is None:
                    continue
                if found != key:
                    return False  # a duplicate id of another stream
                stored += 1
                partial = partial or (stream_name(*key), expected)
    if not stored:
        return False
    if stored == total:
        return True
    assert partial is not None
    raise ConcurrencyError(partial[0], partial[1], None)
