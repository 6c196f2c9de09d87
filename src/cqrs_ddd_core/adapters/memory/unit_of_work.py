"""An in-memory unit of work that is genuinely transactional.

Writers (the in-memory stores) first *prepare* their staged records, checking
everything that could fail (versions, duplicate ids); only when every writer
has prepared are the changes applied, with no ``await`` in between, so a
failure anywhere leaves every store as it was.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

from cqrs_ddd_core.persistence.records import StepTiming
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

    async def _write_and_commit(self, groups: list[StagedGroup]) -> None:
        if not groups:
            # Nothing to write: no step to measure (no COMMIT span or latency
            # for a command that persisted nothing).
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
