"""One span per command or query, with the persistence steps as child spans."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from cqrs_ddd_core.pipeline.pipeline import CallNext, Placement
from cqrs_ddd_core.telemetry.api import error_type, get_tracer
from cqrs_ddd_core.telemetry.names import (
    ATTR_CAUSATION_ID,
    ATTR_CORRELATION_ID,
    ATTR_DB_COLLECTION,
    ATTR_DB_OPERATION,
    ATTR_DB_ROWS,
    ATTR_DB_SYSTEM,
    ATTR_ERROR_TYPE,
    ATTR_MESSAGE_ID,
    ATTR_MESSAGE_KIND,
    ATTR_MESSAGE_TYPE,
)

if TYPE_CHECKING:
    from cqrs_ddd_core.context import DispatchContext
    from cqrs_ddd_core.persistence.records import StepTiming

__all__ = ["TracingMiddleware"]


class TracingMiddleware:
    """Wraps each dispatch in an ``INTERNAL`` span named ``"command <Type>"`` / ``"query <Type>"``.

    The span is the current span while the rest of the pipeline runs, so the
    handler's own spans, the outbox's W3C ``traceparent`` and log records see
    it. On failure its status is ERROR with ``error.type`` and the exception
    recorded; on success the status stays unset. When the dispatch owned the
    unit of work, the steps it measured at commit become ``CLIENT`` child
    spans with their real start and end times (``"INSERT events"``, ``"COMMIT"``).

    With no SDK installed (or a span that is not sampled) it only pays for
    starting a no-op span: no attributes are built and nothing is attached.

    Args:
        tracer_provider: Use this provider instead of the global one (resolved
            lazily: an SDK installed after the mediator was built is used).
    """

    name = "tracing"
    placement = Placement.of(outside=("unit_of_work",))

    __slots__ = ("_names", "_tracer")

    def __init__(self, *, tracer_provider: trace.TracerProvider | None = None) -> None:
        self._tracer = get_tracer(tracer_provider)
        # Span name per message class; a cache (bounded by the message types), not call state.
        self._names: dict[type, str] = {}

    async def __call__(self, message: Any, context: DispatchContext, call_next: CallNext) -> Any:
        name = self._names.get(type(message))
        if name is None:
            name = self._names[type(message)] = f"{context.kind} {context.message_type}"
        span = self._tracer.start_span(name, kind=SpanKind.INTERNAL)
        if not span.is_recording():
            # No SDK (the no-op tracer hands back the current span) or not sampled.
            if span.get_span_context().is_valid and span is not trace.get_current_span():
                # A sampled-out SDK span: make it current so the "not sampled"
                # decision propagates (outbox traceparent), nothing more.
                token = otel_context.attach(trace.set_span_in_context(span))
                try:
                    return await call_next(message, context)
                finally:
                    otel_context.detach(token)
            return await call_next(message, context)

        span.set_attributes(
            {
                ATTR_MESSAGE_KIND: context.kind,
                ATTR_MESSAGE_TYPE: context.message_type,
                ATTR_MESSAGE_ID: context.message_id,
                ATTR_CORRELATION_ID: context.correlation_id,
            }
        )
        if context.causation_id is not None:
            span.set_attribute(ATTR_CAUSATION_ID, context.causation_id)
        # Tracing runs outside the unit of work: no uow yet means this dispatch
        # will open (and commit) it; a nested one joined its parent's, whose
        # steps the parent's span reports.
        owns_uow = context.uow is None
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            return await call_next(message, context)
        except BaseException as exc:
            _fail(span, exc)
            raise
        finally:
            otel_context.detach(token)
            uow = context.uow
            if owns_uow and uow is not None and uow.timings:
                self._emit_steps(span, uow.timings)
            span.end()

    def _emit_steps(self, parent: trace.Span, timings: Sequence[StepTiming]) -> None:
        parent_context = trace.set_span_in_context(parent)
        for step in timings:
            attributes: dict[str, str | int] = {
                ATTR_DB_SYSTEM: step.system,
                ATTR_DB_OPERATION: step.operation,
            }
            if step.collection:
                attributes[ATTR_DB_COLLECTION] = step.collection
                attributes[ATTR_DB_ROWS] = step.rows
                name = f"{step.operation} {step.collection}"
            else:
                name = step.operation
            if step.error_type:
                attributes[ATTR_ERROR_TYPE] = step.error_type
            child = self._tracer.start_span(
                name,
                context=parent_context,
                kind=SpanKind.CLIENT,
                attributes=attributes,
                start_time=step.start_ns,
            )
            if step.error_type:
                child.set_status(Status(StatusCode.ERROR, step.error_type))
            child.end(end_time=step.end_ns)

    def __repr__(self) -> str:
        return f"TracingMiddleware(tracer={self._tracer!r})"


def _fail(span: trace.Span, exc: BaseException) -> None:
    kind = error_type(exc)
    span.set_attribute(ATTR_ERROR_TYPE, kind)
    span.set_status(Status(StatusCode.ERROR, str(exc) or kind))
    span.record_exception(exc)
