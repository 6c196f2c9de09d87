"""One span per command or query, with the persistence steps as child spans."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from cqrs_ddd_core.pipeline.pipeline import CallNext, Placement
from cqrs_ddd_core.telemetry.api import error_type, get_tracer
from cqrs_ddd_core.telemetry.names import (
    ATTR_CAUSATION_ID,
    ATTR_CORRELATION_ID,
    ATTR_DB_BEGIN_MS,
    ATTR_DB_COLLECTION,
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
    ATTR_MESSAGE_ID,
    ATTR_MESSAGE_KIND,
    ATTR_MESSAGE_TYPE,
    ATTR_OUTCOME,
    ATTR_REFUSAL_TYPE,
    ATTR_SERVER_ADDRESS,
    ATTR_SERVER_PORT,
    OUTCOME_REFUSED,
)
from cqrs_ddd_core.telemetry.outcomes import DEFAULT_REFUSALS, Refusals

if TYPE_CHECKING:
    from cqrs_ddd_core.context import DispatchContext
    from cqrs_ddd_core.persistence.records import DatabaseIdentity, StepTiming

__all__ = ["PersistenceSpans", "TracingMiddleware"]

PersistenceSpans = Literal["steps", "commit", "none"]
"""How a commit's persistence steps appear under the dispatch span (see ``TracingMiddleware``)."""

_MODES: Final = frozenset(get_args(PersistenceSpans))
_CACHE_LIMIT: Final = 512  # attribute sets kept per middleware (bounded: rows vary)
_Attributes = dict[str, Any]


def _unset_provider(tracer: trace.Tracer) -> trace.TracerProvider | None:
    # No provider given and none installed yet: the API handed out a proxy
    # tracer, and ``get_tracer_provider()`` returns the API's placeholder
    # provider until the application installs the SDK. That placeholder is
    # remembered: while it is still the global provider, there is nothing to
    # trace; once another is installed, the middleware takes its tracer for good.
    if type(tracer) is trace.ProxyTracer:
        return trace.get_tracer_provider()
    return None


class TracingMiddleware:
    """Wraps each dispatch in an ``INTERNAL`` span named ``"command <Type>"`` / ``"query <Type>"``.

    The span is the current span while the rest of the pipeline runs, so the
    handler's own spans, the outbox's W3C ``traceparent`` and log records see
    it. On failure its status is ERROR with ``error.type`` and the exception
    recorded; on success the status stays unset. A *refusal* (``refusals``: a
    business rule, a version conflict...) is a result, not an error: the status
    stays unset, no exception is recorded, and the span carries
    ``cqrs.outcome="refused"`` and ``cqrs.refusal.type`` (see
    :mod:`cqrs_ddd_core.telemetry.outcomes`). When the dispatch owned the unit
    of work, the steps it measured at commit are reported under it, with
    their real start and end times, as ``persistence_spans`` says; so are the
    database reads the dispatch made (``SELECT events``, ``SELECT
    aggregate_state``: loading aggregates, a query handler's lookups), in
    ``"steps"`` mode. Database spans carry ``db.system.name``,
    ``db.namespace`` and, for a database server, ``server.address`` and
    ``server.port``.

    With no SDK installed (the API's no-op tracer, directly or behind the
    global proxy) the middleware does nothing at all: it hands the message
    straight to the rest of the pipeline, without a coroutine of its own. An
    SDK installed later is picked up at the next dispatch.

    Args:
        tracer_provider: Use this provider instead of the global one (resolved
            lazily: an SDK installed after the mediator was built is used).
        persistence_spans: ``"steps"`` (the default): one ``CLIENT`` child span
            per step (``"INSERT events"``, ``"INSERT outbox"``, ``"COMMIT"``...);
            a ``BEGIN`` step is folded into the step after it, which then starts
            when ``BEGIN`` started and carries ``cqrs.db.begin_ms``.
            ``"commit"``: one ``CLIENT`` span ``"COMMIT"`` per commit, from the
            first step's start to the last one's end, with each step's duration
            as an attribute (``cqrs.db.step.insert_events_ms``,
            ``cqrs.db.step.commit_ms``...), the rows written and, on failure,
            ``error.type`` and ``cqrs.db.failed_step``: one span instead of four
            on SQLite, about a quarter of their cost with the SDK.
            ``"none"``: no persistence spans.
        refusals: Exception types reported as refusals, not errors.
    """

    name = "tracing"
    placement = Placement.of(outside=("unit_of_work",))

    __slots__ = (
        "_attributes",
        "_duration_keys",
        "_names",
        "_noop",
        "_persistence",
        "_refusals",
        "_steps",
        "_tracer",
        "_unset",
    )

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        persistence_spans: PersistenceSpans = "steps",
        refusals: Refusals = DEFAULT_REFUSALS,
    ) -> None:
        if persistence_spans not in _MODES:
            raise ValueError(
                f"persistence_spans must be one of {sorted(_MODES)}, got {persistence_spans!r}"
            )
        tracer = get_tracer(tracer_provider)
        self._tracer = tracer
        self._unset = _unset_provider(tracer)
        self._noop = isinstance(tracer, trace.NoOpTracer)
        self._persistence: PersistenceSpans = persistence_spans
        self._refusals = tuple(refusals)
        # Caches keyed by low-cardinality names, not call state: span name per
        # message class, span name and attributes per step shape.
        self._names: dict[type, str] = {}
        self._steps: dict[tuple[str, str | None], str] = {}
        self._attributes: dict[tuple[Any, ...], tuple[str, _Attributes]] = {}
        self._duration_keys: dict[tuple[str, str | None], str] = {}

    @property
    def persistence_spans(self) -> PersistenceSpans:
        return self._persistence

    def __call__(
        self, message: Any, context: DispatchContext, call_next: CallNext
    ) -> Awaitable[Any]:
        unset = self._unset
        if unset is not None:
            provider = trace.get_tracer_provider()
            if provider is unset:
                return call_next(message, context)
            # A provider is installed now: its tracer, for good.
            tracer = get_tracer(provider)
            self._tracer, self._unset = tracer, None
            self._noop = isinstance(tracer, trace.NoOpTracer)
            if self._noop:
                return call_next(message, context)
        elif self._noop:
            return call_next(message, context)
        return self._traced(message, context, call_next)

    async def _traced(self, message: Any, context: DispatchContext, call_next: CallNext) -> Any:
        name = self._names.get(type(message))
        if name is None:
            name = self._names[type(message)] = f"{context.kind} {context.message_type}"
        attributes: _Attributes = {
            ATTR_MESSAGE_KIND: context.kind,
            ATTR_MESSAGE_TYPE: context.message_type,
            ATTR_MESSAGE_ID: context.message_id,
            ATTR_CORRELATION_ID: context.correlation_id,
        }
        if context.causation_id is not None:
            attributes[ATTR_CAUSATION_ID] = context.causation_id
        # Attributes at start: one pass through the SDK's attribute checks, and
        # a sampler sees them.
        span = self._tracer.start_span(name, kind=SpanKind.INTERNAL, attributes=attributes)
        if not span.is_recording():
            # Not sampled (or a tracer that hands back the current span).
            if span.get_span_context().is_valid and span is not trace.get_current_span():
                # A sampled-out SDK span: make it current so the "not sampled"
                # decision propagates (outbox traceparent), nothing more.
                token = otel_context.attach(trace.set_span_in_context(span))
                try:
                    return await call_next(message, context)
                finally:
                    otel_context.detach(token)
            return await call_next(message, context)

        # Tracing runs outside the unit of work: no uow yet means this dispatch
        # will open (and commit) it; a nested one joined its parent's, whose
        # steps the parent's span reports.
        owns_uow = context.uow is None
        mode = self._persistence
        if mode == "steps":
            context.db_steps = []  # the reads of this dispatch are measured from now on
        # One context for the whole dispatch: attached while the rest of the
        # pipeline runs, then the parent of the persistence spans.
        span_context = trace.set_span_in_context(span)
        token = otel_context.attach(span_context)
        try:
            return await call_next(message, context)
        except BaseException as exc:
            if isinstance(exc, self._refusals):
                _refuse(span, exc)
            else:
                _fail(span, exc)
            raise
        finally:
            otel_context.detach(token)
            if mode != "none":
                reads = context.db_steps
                if reads and mode == "steps":
                    self._emit_steps(span_context, reads, None, None)
                uow = context.uow
                if owns_uow and uow is not None and uow.timings:
                    database = getattr(uow, "database", None)
                    window = getattr(uow, "commit_window", None)
                    if mode == "steps":
                        self._emit_steps(span_context, uow.timings, database, window)
                    else:
                        self._emit_commit(span_context, uow.timings, database, window)
            span.end()

    # -- persistence spans ---------------------------------------------------

    def _step_name(self, step: StepTiming) -> str:
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
            name = self._step_name(step)
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

    def _emit_steps(
        self,
        parent_context: otel_context.Context,
        timings: Sequence[StepTiming],
        database: DatabaseIdentity | None,
        window: tuple[int, int] | None,
    ) -> None:
        start_span = self._tracer.start_span
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
                step=self._step_name(step).lower().replace(" ", "_")
            )
        return found

    def _emit_commit(
        self,
        parent_context: otel_context.Context,
        timings: Sequence[StepTiming],
        database: DatabaseIdentity | None,
        window: tuple[int, int] | None,
    ) -> None:
        first = timings[0]
        attributes: _Attributes = {
            ATTR_DB_SYSTEM: first.system,
            ATTR_DB_OPERATION: "COMMIT",
        }
        _identify(attributes, first.database or database)
        start, end, rows, failed = first.start_ns, first.end_ns, 0, None
        for step in timings:
            # One scalar per step (cheaper for the SDK than arrays, and
            # searchable: cqrs.db.step.commit_ms > 5).
            key = self._duration_key(step)
            duration = (step.end_ns - step.start_ns) / 1e6
            attributes[key] = round(attributes.get(key, 0.0) + duration, 3)
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
            attributes[ATTR_DB_FAILED_STEP] = self._step_name(failed)
        child = self._tracer.start_span(
            "COMMIT",
            context=parent_context,
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=start,
        )
        if failed is not None:
            child.set_status(Status(StatusCode.ERROR, failed.error_type))
        child.end(end_time=end)

    def __repr__(self) -> str:
        return (
            f"TracingMiddleware(tracer={self._tracer!r}, persistence_spans={self._persistence!r})"
        )


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


def _refuse(span: trace.Span, exc: BaseException) -> None:
    """A refusal is a result: status left unset, no exception event (no stack trace)."""
    span.set_attribute(ATTR_OUTCOME, OUTCOME_REFUSED)
    span.set_attribute(ATTR_REFUSAL_TYPE, error_type(exc))


def _fail(span: trace.Span, exc: BaseException) -> None:
    kind = error_type(exc)
    span.set_attribute(ATTR_ERROR_TYPE, kind)
    span.set_status(Status(StatusCode.ERROR, str(exc) or kind))
    span.record_exception(exc)
