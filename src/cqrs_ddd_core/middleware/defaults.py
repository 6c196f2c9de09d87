"""The pipelines a mediator builds when the team lists nothing.

Commands: ``tracing -> logging -> metrics -> validation -> unit_of_work -> handler``
(``unit_of_work`` only with a factory). Queries:
``tracing -> logging -> metrics -> validation -> handler``. Tracing is
outermost so its span is current for everything else (log records carry its
ids); metrics wraps the unit of work so command durations include the commit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cqrs_ddd_core.middleware.logging import LoggingMiddleware
from cqrs_ddd_core.middleware.metrics import MetricsMiddleware
from cqrs_ddd_core.middleware.tracing import TracingMiddleware
from cqrs_ddd_core.middleware.unit_of_work import UnitOfWorkMiddleware
from cqrs_ddd_core.middleware.validation import ValidationMiddleware

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

    from cqrs_ddd_core.persistence.ports import UnitOfWorkFactory
    from cqrs_ddd_core.pipeline.pipeline import Middleware

__all__ = ["default_command_middlewares", "default_query_middlewares"]


def _observability(
    tracer_provider: TracerProvider | None, meter_provider: MeterProvider | None
) -> list[Middleware]:
    return [
        TracingMiddleware(tracer_provider=tracer_provider),
        LoggingMiddleware(),
        MetricsMiddleware(meter_provider=meter_provider),
    ]


def default_command_middlewares(
    *,
    uow_factory: UnitOfWorkFactory | None,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
) -> list[Middleware]:
    """tracing -> logging -> metrics -> validation -> unit_of_work (when there is a factory).

    Args:
        uow_factory: Makes the unit of work of each top-level command.
        tracer_provider: For the tracing middleware (default: the global one).
        meter_provider: For the metrics middleware (default: the global one).
    """
    middlewares = _observability(tracer_provider, meter_provider)
    middlewares.append(ValidationMiddleware())
    if uow_factory is not None:
        middlewares.append(UnitOfWorkMiddleware(uow_factory))
    return middlewares


def default_query_middlewares(
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
) -> list[Middleware]:
    """tracing -> logging -> metrics -> validation (queries open no unit of work by default)."""
    middlewares = _observability(tracer_provider, meter_provider)
    middlewares.append(ValidationMiddleware())
    return middlewares
