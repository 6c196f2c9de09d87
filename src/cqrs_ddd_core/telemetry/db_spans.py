"""Database spans and span events from the steps a unit of work measured.

The unit of work records ``StepTiming(start_ns, end_ns)`` per step while it
commits (and the SQL adapters per read); :class:`DatabaseSpans` turns them
into telemetry after the fact, with the times they really had, in one of
the shapes ``TracingMiddleware(persistence_spans=...)`` offers:

* ``"steps"``: one ``CLIENT`` span per step (``BEGIN`` folded into the next);
* ``"commit"``: one ``CLIENT`` span ``COMMIT`` over the whole commit, with
  each step's duration as an attribute;
* ``"events"``: that ``COMMIT`` span, plus one span event per step (its
  start as the timestamp); reads become events of the dispatch's span.

What each costs the SDK, per commit of five steps, is measured in
``docs/observability.md`` ("Persistence spans and what they cost").

Only the OpenTelemetry API is used: ``Tracer.start_span`` with explicit
``start_time`` and ``Span.end(end_time=...)``, ``Span.add_event(timestamp=...)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from opentelemetry.trace import SpanKind, Status, StatusCode

from cqrs_ddd_core.telemetry.names import (
    ATTR_DB_BEGIN_MS,
    ATTR_DB_COLLECTION,
    ATTR_DB_DURATION_MS,
    ATTR_DB_FAILED_STEP,
    ATTR_DB_NAMESPACE,
    ATTR_DB_OPERATION,
    ATTR_DB_QUERY_SUMMARY,
    ATTR_DB_RETURN_MS,
    ATTR_DB_RETURNED_ROWS,
    ATTR_DB_ROWS,
    ATTR_DB_STEP_DURATION_MS,
    ATTR_DB_SYSTEM,
    ATTR_DB_WAIT_MS,
    ATTR_ERROR_TYPE,
    ATTR_SERVER_ADDRESS,
    ATTR_SERVER_PORT,
)

if TYPE_CHECKING:
    from opentelemetry import context as otel_context
    from opentelemetry import trace

    from cqrs_ddd_core.persistence.records import DatabaseIdentity, StepTiming

__all__ = ["DatabaseSpans"]

_CACHE_LIMIT: Final = 512  # attribute sets kept (bounded: rows vary)
_Attributes = dict[str, Any]


class DatabaseSpans:
    """Emits a dispatch's database telemetry; caches names and attribute sets per step shape.

    The caches are keyed by low-cardinality names (operation, table, rows,
    error type, database), not by call state, and bounded.
    """

    __slots__ = ("_attributes", "_duration_keys", "_steps")

    def __init__(self) -> None:
        self._steps: dict[tuple[str, str | None], str] = {}
        self._attributes: dict[tuple[Any, ...], tuple[str, _Attributes]] = {}
        self._duration_keys: dict[tuple[str, str | None], str] = {}

    def step_name(self, step: StepTiming) -> str:
        """``"INSERT events"``, ``"COMMIT"``...: the span (or event) name of ``step``."""
        key = (step.operation, step.collection)
        name = self._steps.get(key)
        if name is None:
            name = self._steps[key] = (
                f"{step.operation} {step.collection}" if step.collection else step.operation
            )
        return name

    def _step_shape(
        self, step: StepTiming, database: DatabaseIdentity | None
    ) -> tuple[str, _Attributes]:
        """``(span name, attributes)`` of a step span, built once per step shape.

        The SDK copies the attributes it is given, so the same dict serves
        every span of that shape; a span that needs more (``cqrs.db.begin_ms``,
        ``cqrs.db.wait_ms``...) gets a copy.
        """
        database = step.database or database
        key = (step.system, step.operation, step.collection, step.rows, step.error_type, database)
        found = self._attributes.get(key)
        if found is None:
            attributes: _Attributes = {
                ATTR_DB_SYSTEM: step.system,
                ATTR_DB_OPERATION: step.operation,
            }
            _identify(attributes, database)
            name = self.step_name(step)
            if step.collection:
                attributes[ATTR_DB_COLLECTION] = step.collection
                attributes[ATTR_DB_QUERY_SUMMARY] = name
                if step.operation == "SELECT":
                    attributes[ATTR_DB_RETURNED_ROWS] = step.rows
                else:
                    attributes[ATTR_DB_ROWS] = step.rows
            if step.error_type:
                attributes[ATTR_ERROR_TYPE] = step.error_type
            if len(self._attributes) >= _CACHE_LIMIT:
                self._attributes.clear()
            found = self._attributes[key] = (name, attributes)
        return found

    def steps(
        self,
        tracer: trace.Tracer,
        parent_context: otel_context.Context,
        timings: Sequence[StepTiming],
        database: DatabaseIdentity | None,
        window: tuple[int, int] | None,
    ) -> None:
        """One ``CLIENT`` span per step under ``parent_context`` (``BEGIN`` folded)."""
        start_span = tracer.start_span
        shape = self._step_shape
        last = len(timings) - 1
        begin_start = begin_ns = 0
        wait_start, return_end = _window(timings, window)
        for index, step in enumerate(timings):
            if step.operation == "BEGIN" and not step.error_type and index < last:
                # Folded into the next step: one span less, and no gap in the trace.
                begin_start, begin_ns = step.start_ns, step.end_ns - step.start_ns
                continue
            name, attributes = shape(step, database)
            start = begin_start if begin_ns else step.start_ns
            end = step.end_ns
            extra = begin_ns or wait_start or (index == last and return_end)
            if extra:
                attributes = dict(attributes)
                if begin_ns:
                    attributes[ATTR_DB_BEGIN_MS] = round(begin_ns / 1e6, 3)
                if wait_start:  # the first span starts when the commit was asked for
                    attributes[ATTR_DB_WAIT_MS] = round((start - wait_start) / 1e6, 3)
                    start, wait_start = wait_start, 0
                if index == last and return_end:  # the last one ends when the caller knew
                    attributes[ATTR_DB_RETURN_MS] = round((return_end - end) / 1e6, 3)
                    end = return_end
                begin_start = begin_ns = 0
            child = start_span(
                name,
                context=parent_context,
                kind=SpanKind.CLIENT,
                attributes=attributes,
                start_time=start,
            )
            if step.error_type:
                child.set_status(Status(StatusCode.ERROR, step.error_type))
            child.end(end_time=end)

    def _duration_key(self, step: StepTiming) -> str:
        key = (step.operation, step.collection)
        found = self._duration_keys.get(key)
        if found is None:
            found = self._duration_keys[key] = ATTR_DB_STEP_DURATION_MS.format(
                step=self.step_name(step).lower().replace(" ", "_")
            )
        return found

    def commit(
        self,
        tracer: trace.Tracer,
        parent_context: otel_context.Context,
        timings: Sequence[StepTiming],
        database: DatabaseIdentity | None,
        window: tuple[int, int] | None,
        *,
        events: bool = False,
    ) -> None:
        """One ``CLIENT`` span ``COMMIT`` over the commit; with ``events``, an event per step.

        A step's event is named like its span in ``"steps"`` mode and stamped
        with the step's start; it has no attributes of its own.
        """
        first = timings[0]
        attributes: _Attributes = {
            ATTR_DB_SYSTEM: first.system,
            ATTR_DB_OPERATION: "COMMIT",
        }
        _identify(attributes, first.database or database)
        start, end, rows, failed = first.start_ns, first.end_ns, 0, None
        keys = self._duration_keys
        for step in timings:
            # One scalar per step (cheaper for the SDK than arrays, and
            # searchable: cqrs.db.step.commit_ms > 5).
            key = keys.get((step.operation, step.collection)) or self._duration_key(step)
            duration = (step.end_ns - step.start_ns) / 1e6
            if key in attributes:  # a step shape seen twice in one commit: summed
                duration += attributes[key]
            attributes[key] = round(duration, 3)
            rows += step.rows
            if step.start_ns < start:
                start = step.start_ns
            if step.end_ns > end:
                end = step.end_ns
            if step.error_type and failed is None:
                failed = step
        attributes[ATTR_DB_ROWS] = rows if failed is None else 0  # rolled back: none kept
        wait_start, return_end = _window(timings, window)
        if wait_start:
            attributes[ATTR_DB_WAIT_MS] = round((start - wait_start) / 1e6, 3)
            start = wait_start
        if return_end:
            attributes[ATTR_DB_RETURN_MS] = round((return_end - end) / 1e6, 3)
            end = return_end
        if failed is not None:
            attributes[ATTR_ERROR_TYPE] = failed.error_type
            attributes[ATTR_DB_FAILED_STEP] = self.step_name(failed)
        child = tracer.start_span(
            "COMMIT",
            context=parent_context,
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=start,
        )
        if events:
            # Bare events (a name and a time): the span already carries each
            # step's duration, the rows and the failed step, and an event's
            # attributes cost the SDK about as much again as the event itself.
            add_event, name_of = child.add_event, self.step_name
            for step in timings:
                add_event(name_of(step), None, step.start_ns)
        if failed is not None:
            child.set_status(Status(StatusCode.ERROR, failed.error_type))
        child.end(end_time=end)

    def events(self, span: trace.Span, timings: Sequence[StepTiming]) -> None:
        """One event per read on ``span`` (the dispatch's): the read's name, at its start.

        Attributes: ``cqrs.db.duration_ms``, ``db.response.returned_rows``
        and, when the read failed, ``error.type``.
        """
        add_event = span.add_event
        name_of = self.step_name
        for step in timings:
            attributes: _Attributes = {
                ATTR_DB_DURATION_MS: round((step.end_ns - step.start_ns) / 1e6, 3),
                ATTR_DB_RETURNED_ROWS: step.rows,
            }
            if step.error_type:
                attributes[ATTR_ERROR_TYPE] = step.error_type
            add_event(name_of(step), attributes, step.start_ns)


def _window(timings: Sequence[StepTiming], window: tuple[int, int] | None) -> tuple[int, int]:
    """``(wait start, return end)`` to stretch a commit's first and last span to (0: no).

    Only when the window holds every step (the steps measured with the same
    clock, in the same commit) and ends before the ``ROLLBACK`` the unit of
    work added after it, if any.
    """
    if window is None:
        return 0, 0
    started, ended = window
    first_start = min(step.start_ns for step in timings)
    last = timings[-1]
    if started > first_start or last.operation == "ROLLBACK" or ended < last.end_ns:
        return (started if started <= first_start else 0), 0
    return started, ended


def _identify(attributes: _Attributes, database: DatabaseIdentity | None) -> None:
    if database is None:
        return
    if database.namespace is not None:
        attributes[ATTR_DB_NAMESPACE] = database.namespace
    if database.server_address is not None:
        attributes[ATTR_SERVER_ADDRESS] = database.server_address
    if database.server_port is not None:
        attributes[ATTR_SERVER_PORT] = database.server_port
