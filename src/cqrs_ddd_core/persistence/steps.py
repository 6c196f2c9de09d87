"""What a unit of work and the reads of a dispatch measured, for tracing and metrics.

The adapters measure their steps as :class:`~.records.StepTiming` s and need
no telemetry code; the helpers here finish the picture in one place for every
adapter:

* :func:`failed_steps` and :func:`rollback_step`: a failed commit reports
  its failure in one form (``error.type``, the exception's qualified name),
  no rows for the failed step (nothing it wrote was kept), and a ``ROLLBACK``
  step;
* :func:`record_read`: a read (loading an aggregate, a query handler's
  lookup) is kept on the running dispatch, which tracing turns into a
  database client span under the dispatch's span (only while tracing
  records one: otherwise a read measures nothing);
* :func:`written_by_aggregate_type`: what a committed unit of work stored
  (events in an event store, messages in an outbox), per aggregate type, so
  that ``cqrs.events.stored`` and ``cqrs.outbox.enqueued`` count rows that
  exist, each with one meaning.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

from cqrs_ddd_core.context import current_context
from cqrs_ddd_core.exceptions import CqrsDddError
from cqrs_ddd_core.persistence.records import StepTiming
from cqrs_ddd_core.telemetry.api import error_type

if TYPE_CHECKING:
    from cqrs_ddd_core.persistence.unit_of_work import StagedGroup

__all__ = [
    "EVENTS_COLLECTION",
    "OUTBOX_COLLECTION",
    "failed_steps",
    "reads_wanted",
    "record_read",
    "rollback_step",
    "written_by_aggregate_type",
]

EVENTS_COLLECTION: Final = "events"
"""``collection`` of an event store: its records count in ``cqrs.events.stored``."""
OUTBOX_COLLECTION: Final = "outbox"
"""``collection`` of an outbox store: its records count in ``cqrs.outbox.enqueued``."""


def failed_steps(timings: list[StepTiming], exc: BaseException) -> None:
    """Give the failed steps of a commit their ``error.type`` in one form, and no rows.

    The adapters name the error they met by its class name; the span, the
    metric and the log name a type by its qualified name. The step's error is
    ``exc`` (what the caller gets) or one in its chain of causes; else (a
    cancellation reached the caller, the step had met a conflict) it is found
    among the project's exceptions by name. A failed step kept nothing (its
    transaction rolled back), so it reports 0 rows.
    """
    for index, step in enumerate(timings):
        if step.error_type is not None:
            kind = _qualified(step.error_type, exc)
            timings[index] = dataclasses.replace(step, error_type=kind, rows=0)


def _qualified(name: str, exc: BaseException) -> str:
    if "." in name:
        return name
    node: BaseException | None = exc
    for _ in range(8):  # the chain of causes, bounded
        if node is None:
            break
        if type(node).__name__ == name:
            return error_type(node)
        node = node.__cause__ or node.__context__
    return _project_errors().get(name, name)


_by_name: dict[str, str] = {}


def _project_errors() -> dict[str, str]:
    """Class name -> qualified name of every project exception (the core's first)."""
    if not _by_name:
        pending: list[type[BaseException]] = [CqrsDddError]
        while pending:
            cls = pending.pop(0)
            _by_name.setdefault(cls.__name__, f"{cls.__module__}.{cls.__qualname__}")
            pending.extend(cls.__subclasses__())
    return _by_name


def rollback_step(timings: list[StepTiming], started_ns: int) -> None:
    """Close a failed commit's steps with a ``ROLLBACK`` step, if they have none.

    It runs from the end of the failed step (the adapter rolled back right
    after it) or from ``started_ns`` to now. Without steps (nothing reached the
    database), there is nothing to roll back and nothing is added.
    """
    if not timings or timings[-1].operation == "ROLLBACK":
        return
    last = timings[-1]
    start = min(last.end_ns, started_ns)
    end = max(time.time_ns(), start)
    timings.append(StepTiming("ROLLBACK", None, last.system, start, end, 0, None, last.database))


def reads_wanted() -> list[StepTiming] | None:
    """The running dispatch's list of read steps, when something will report them.

    Tracing sets ``DispatchContext.db_steps`` to a list while it records a
    span; otherwise (no SDK, no dispatch, a mode without step spans) it stays
    None and a read measures nothing.
    """
    context = current_context()
    return None if context is None else context.db_steps


def record_read(step: StepTiming) -> None:
    """Keep a read step on the running dispatch, if something will report it."""
    steps = reads_wanted()
    if steps is not None:
        steps.append(step)


def written_by_aggregate_type(
    committed: Iterable[StagedGroup],
) -> tuple[dict[str, int], dict[str, int]]:
    """``(events stored, outbox messages enqueued)`` per aggregate type of a commit.

    ``committed`` is :attr:`~.unit_of_work.BaseUnitOfWork.committed`. A writer
    is counted when its ``collection`` is ``"events"`` (records: the
    ``AppendBatch`` es of :func:`~.serialization.encode_append`) or
    ``"outbox"`` (records with an ``aggregate_type``, or a writer method
    ``aggregate_type_of(record)``).
    """
    stored: dict[str, int] = {}
    enqueued: dict[str, int] = {}
    # Counted inline (no helper call per record): metrics ask on every commit.
    for writer, records in committed:
        collection = getattr(writer, "collection", None)
        if collection == EVENTS_COLLECTION:
            for record in records:
                key = record[0] or "none"
                stored[key] = stored.get(key, 0) + len(record[3])
        elif collection == OUTBOX_COLLECTION:
            type_of: Any = getattr(writer, "aggregate_type_of", None)
            for record in records:
                key = (type_of(record) if type_of is not None else record.aggregate_type) or "none"
                enqueued[key] = enqueued.get(key, 0) + 1
    return stored, enqueued
