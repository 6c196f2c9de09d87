"""Workload 2: the default pipeline, no OpenTelemetry SDK, logging filtered out.

Ours: ``Mediator(registry, InMemoryUnitOfWork)`` with the default command
pipeline (tracing -> logging -> metrics -> validation -> unit of work, in-memory
adapters). No SDK provider is installed (the OpenTelemetry API hands out
no-ops) and structlog is configured the production way at WARNING, so the
logging middleware's INFO/DEBUG events are filtered out. The handler returns
``None``; the unit of work opens and commits with nothing staged.

For where our time goes, same run: ``ours_no_telemetry`` (the default
pipeline without its tracing, logging and metrics steps: validation -> unit of
work) and ``ours_no_middleware`` (the mediator alone); the figures give the
differences in µs.

Against python-cqrs with its defaults: ``bootstrap`` with no middleware listed
(it adds its logging middleware; its ``"cqrs"`` logger is at DEBUG as the
library sets it, with no handler configured).
"""

from __future__ import annotations

from benchmarks.baselines.bare import bare_handler
from benchmarks.harness import Case, Config, Target, WorkloadResult, interleave, ratio, summarize
from benchmarks.logs import configure_filtered
from benchmarks.ours import Ping, make_mediator, sender

NAME = "default_pipeline"
TITLE = "2. Default pipeline (no OTel SDK, logging filtered) vs python-cqrs defaults"

TARGETS = [
    Target(
        "default_pipeline_vs_python_cqrs",
        "speedup_vs_python_cqrs_default",
        ">=",
        5.0,
        "default pipeline, in-memory UoW, no SDK, logs filtered: >= 5x faster than "
        "python-cqrs with its defaults",
    ),
]


async def run(cfg: Config) -> WorkloadResult:
    from opentelemetry import trace

    from benchmarks.peers.python_cqrs import make_sender
    from cqrs_ddd_core.adapters.memory import InMemoryUnitOfWork
    from cqrs_ddd_core.middleware import UnitOfWorkMiddleware, ValidationMiddleware

    configure_filtered()
    command = Ping()
    ours, handler = make_mediator(None, uow_factory=InMemoryUnitOfWork)
    order = ours.pipeline.describe()
    # Where our time goes, same run: the default pipeline without its three
    # telemetry steps, and the mediator with no middleware at all.
    untraced, _ = make_mediator(
        [ValidationMiddleware(), UnitOfWorkMiddleware(InMemoryUnitOfWork)],
        uow_factory=InMemoryUnitOfWork,
    )
    bare_mediator, _ = make_mediator([])
    cases = [
        Case("bare_handler", "await handler.handle(cmd)", bare_handler(handler, command)),
        Case("ours_default", f"ours: {order}", sender(ours, command)),
        Case(
            "ours_no_telemetry",
            f"ours: {untraced.pipeline.describe()} (the default without tracing, logging, metrics)",
            sender(untraced, command),
        ),
        Case("ours_no_middleware", "ours: Mediator, no middleware", sender(bare_mediator, command)),
        Case(
            "python_cqrs_default",
            "python-cqrs: bootstrap defaults (its logging mw, logger at DEBUG)",
            make_sender(0, "default"),
        ),
        Case(
            "python_cqrs_silenced",
            "python-cqrs: bootstrap defaults, logger at WARNING",
            make_sender(0, "silenced"),
        ),
    ]
    stats = await interleave(cases, cfg)
    result = WorkloadResult(NAME, TITLE, cases=stats)
    result.ratios = [
        ratio(
            stats,
            "speedup_vs_python_cqrs_default",
            "python_cqrs_default",
            "ours_default",
            "python-cqrs (defaults) time / ours (default pipeline)",
        ),
        ratio(
            stats,
            "speedup_vs_python_cqrs_silenced",
            "python_cqrs_silenced",
            "ours_default",
            "python-cqrs (logger at WARNING) time / ours",
        ),
        ratio(
            stats, "ours_vs_bare", "ours_default", "bare_handler", "ours time / bare handler call"
        ),
    ]
    by = {c.name: c.median_ns for c in stats}
    result.figures = {
        "telemetry_us": round((by["ours_default"] - by["ours_no_telemetry"]) / 1000, 3),
        "validation_and_uow_us": round(
            (by["ours_no_telemetry"] - by["ours_no_middleware"]) / 1000, 3
        ),
        "mediator_us": round((by["ours_no_middleware"] - by["bare_handler"]) / 1000, 3),
    }
    expected = ["tracing", "logging", "metrics", "validation", "unit_of_work", "handler"]
    if list(ours.pipeline.order) != expected:
        result.notes.append(f"the default pipeline is {order!r}, not {' -> '.join(expected)!r}")
    result.settings = {
        "pipeline": order,
        "otel_tracer_provider": type(trace.get_tracer_provider()).__name__,
        "structlog": "JSON renderer, make_filtering_bound_logger(WARNING), cached",
        "uow": "InMemoryUnitOfWork (nothing staged)",
    }
    return summarize(result, TARGETS)
