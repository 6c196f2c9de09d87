"""Tracer and meter with the library's fixed instrumentation scope.

Only the OpenTelemetry *API* is used here. Without a provider argument the
global one is used; when the application has not installed the SDK yet, the
API hands out proxies (``ProxyTracer``, ``_ProxyMeter``) that switch to the
real SDK objects once it is installed, so a mediator built before
``setup_telemetry()`` still reports — and costs next to nothing until then.
"""

from __future__ import annotations

from opentelemetry import metrics, trace

from cqrs_ddd_core.telemetry.names import SCOPE_NAME
from cqrs_ddd_core.version import __version__

__all__ = ["error_type", "get_meter", "get_tracer"]


def get_tracer(tracer_provider: trace.TracerProvider | None = None) -> trace.Tracer:
    """The ``cqrs_ddd`` tracer (scope version = package version).

    Args:
        tracer_provider: Use this provider instead of the global one (tests,
            multi-tenant applications).
    """
    return trace.get_tracer(SCOPE_NAME, __version__, tracer_provider)


def get_meter(meter_provider: metrics.MeterProvider | None = None) -> metrics.Meter:
    """The ``cqrs_ddd`` meter (scope version = package version).

    Args:
        meter_provider: Use this provider instead of the global one.
    """
    return metrics.get_meter(SCOPE_NAME, __version__, meter_provider)


_error_types: dict[type, str] = {}


def error_type(exc: BaseException) -> str:
    """The ``error.type`` of ``exc``: its fully qualified class name.

    Semantic conventions ask for the canonical class name
    (``cqrs_ddd_core.exceptions.ConcurrencyError``); builtins keep their bare
    name (``ValueError``). Cached per class: the value is low-cardinality by design.
    """
    cls = type(exc)
    found = _error_types.get(cls)
    if found is None:
        module = cls.__module__
        found = cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"
        _error_types[cls] = found
    return found
