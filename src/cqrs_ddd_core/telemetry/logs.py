"""A structlog processor that ties log events to the current trace."""

from __future__ import annotations

from typing import TYPE_CHECKING

from opentelemetry import trace

if TYPE_CHECKING:
    from structlog.typing import EventDict, WrappedLogger

__all__ = ["add_trace_context"]


def add_trace_context(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Add ``trace_id`` (32 hex digits) and ``span_id`` (16) of the current span.

    Nothing is added outside a valid span context. Put it after
    ``structlog.contextvars.merge_contextvars`` in your processor chain::

        structlog.configure(processors=[
            structlog.contextvars.merge_contextvars,
            add_trace_context,
            ...,
        ])
    """
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event_dict["trace_id"] = trace.format_trace_id(ctx.trace_id)
        event_dict["span_id"] = trace.format_span_id(ctx.span_id)
    return event_dict
