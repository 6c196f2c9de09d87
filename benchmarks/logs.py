"""structlog set-ups an application would use (the library never configures structlog).

structlog's configuration is process-wide, but a logger proxy obtained with
``structlog.get_logger(name)`` and ``cache_logger_on_first_use=True`` keeps the
configuration that was current when it was first used. :func:`pin` uses that
to give two pipelines of one process different logging set-ups: configure,
use the pipeline once (its logging middleware caches its logger), move on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

import structlog

__all__ = ["configure_filtered", "configure_json", "null_stream", "pin"]

_null: TextIO | None = None


def null_stream() -> TextIO:
    """A text stream that discards what is written (``os.devnull``)."""
    global _null
    if _null is None:
        _null = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 (process lifetime)
    return _null


def configure_filtered(*, cache: bool = True) -> None:
    """Production JSON logging with the level at WARNING: INFO/DEBUG filtered out."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.WriteLoggerFactory(file=null_stream()),
        cache_logger_on_first_use=cache,
    )


def configure_json(*, cache: bool = True) -> None:
    """Production JSON logging at INFO, with trace ids, written to a null stream."""
    from cqrs_ddd_core.telemetry import add_trace_context

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_trace_context,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.WriteLoggerFactory(file=null_stream()),
        cache_logger_on_first_use=cache,
    )


async def pin(configure: Callable[[], None], first_use: Callable[[], Awaitable[Any]]) -> None:
    """Configure structlog, then use a pipeline once so its loggers keep this set-up."""
    configure()
    await first_use()
