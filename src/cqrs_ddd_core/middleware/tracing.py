"""One span per command or query, with the persistence steps as child spans."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from cqrs_ddd_core.pipeline.pipeline import CallNext, Placement
from cqrs_ddd_core.telemetry.api import error_type, get_tracer
from cqrs_ddd_core.telemetry.db_spans import DatabaseSpans
from cqrs_ddd_core.telemetry.names import (
    ATTR_CAUSATION_ID,
    ATTR_CORRELATION_ID,
    ATTR_ERROR_TYPE,
    ATTR_MESSAGE_ID,
    ATTR_MESSAGE_KIND,
    ATTR_MESSAGE_TYPE,
    ATTR_OUTCOME,
    ATTR_REFUSAL_TYPE,
    OUTCOME_REFUSED,
)
from cqrs_ddd_core.telemetry.outcomes import DEFAULT_REFUSALS, Refusals

if TYPE_CHECKING:
    from cqrs_ddd_core.context import DispatchContext

__all__ = ["PersistenceSpans", "TracingMiddleware"]

PersistenceSpans = Literal["steps", "commit", "events", "none"]
"""How a commit's persistence steps appear under the dispatch span (see ``TracingMiddleware``)."""

_MODES: Final = frozenset(get_args(PersistenceSpans))
_READS: Final = frozenset({"steps", "events"})  # the modes that measure a dispatch's reads
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
    ``"steps"`` mode (as spans) and ``"events"`` mode (as events of the
    dispatch's span). Database spans carry ``db.system.name``,
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
            ``"events"``: that ``"COMMIT"`` span, plus one span event per step
            (named like the step's span, at the step's start; the span holds
            the durations, rows and failure), and each read an event of the
            dispatch's span (with ``cqrs.db.duration_ms``,
            ``db.response.returned_rows``): the commit's timeline for an event
            per step instead of a span. ``"none"``: no persistence spans.
        refusals: Exception types reported as refusals, not errors.
    """

    name = "tracing"
    placement = Placement.of(outside=("unit_of_work",))

    __slots__ = (
        "_database",
        "_names",
        "_noop",
        "_persistence",
        "_refusals",
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
        # message class here, span names and attributes per step shape there.
        self._names: dict[type, str] = {}
        self._database = DatabaseSpans()

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
        # The current context, read once: the SDK would look it up three times
        # (parent span, sampler, parent trace state) and set_span_in_context once
        # more. Attributes at start: one pass through the SDK's attribute checks,
        # and a sampler sees them.
        parent = otel_context.get_current()
        span = self._tracer.start_span(
            name, context=parent, kind=SpanKind.INTERNAL, attributes=attributes
        )
        if not span.is_recording():
            # Not sampled (or a tracer that hands back the current span).
            if span.get_span_context().is_valid and span is not trace.get_current_span(parent):
                # A sampled-out SDK span: make it current so the "not sampled"
                # decision propagates (outbox traceparent), nothing more.
                token = otel_context.attach(trace.set_span_in_context(span, parent))
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
        if mode in _READS:
            context.db_steps = []  # the reads of this dispatch are measured from now on
        # One context for the whole dispatch: attached while the rest of the
        # pipeline runs, then the parent of the persistence spans.
        span_context = trace.set_span_in_context(span, parent)
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
                self._report(span, span_context, context, owns_uow, mode)
            span.end()

    def _report(
        self,
        span: trace.Span,
        span_context: otel_context.Context,
        context: DispatchContext,
        owns_uow: bool,
        mode: PersistenceSpans,
    ) -> None:
        """The dispatch's reads and, if it owned the unit of work, its commit, as ``mode`` says."""
        database_spans, tracer = self._database, self._tracer
        reads = context.db_steps
        if reads:
            if mode == "steps":
                database_spans.steps(tracer, span_context, reads, None, None)
            elif mode == "events":
                database_spans.events(span, reads)
        uow = context.uow
        if owns_uow and uow is not None and uow.timings:
            database = getattr(uow, "database", None)
            window = getattr(uow, "commit_window", None)
            if mode == "steps":
                database_spans.steps(tracer, span_context, uow.timings, database, window)
            else:
                database_spans.commit(
                    tracer, span_context, uow.timings, database, window, events=mode == "events"
                )

    def __repr__(self) -> str:
        return (
            f"TracingMiddleware(tracer={self._tracer!r}, persistence_spans={self._persistence!r})"
        )


def _refuse(span: trace.Span, exc: BaseException) -> None:
    """A refusal is a result: status left unset, no exception event (no stack trace)."""
    span.set_attribute(ATTR_OUTCOME, OUTCOME_REFUSED)
    span.set_attribute(ATTR_REFUSAL_TYPE, error_type(exc))


def _fail(span: trace.Span, exc: BaseException) -> None:
    kind = error_type(exc)
    span.set_attribute(ATTR_ERROR_TYPE, kind)
    span.set_status(Status(StatusCode.ERROR, str(exc) or kind))
    span.record_exception(exc)
