"""Workload 3: what observability costs on a persisted command (SQLite).

The same persisted command (event + outbox + state, see workload 4) through
the same pipeline (tracing -> logging -> metrics -> validation -> unit_of_work
-> event_persistence -> outbox), side by side:

* **SDK on**: a ``TracerProvider`` with a ``BatchSpanProcessor`` over an
  exporter that discards, a ``MeterProvider`` with the Prometheus reader
  (as ``setup_telemetry(prometheus=True)`` builds it; both injected into the
  middlewares), and structlog rendering JSON lines (with
  trace ids) at INFO to a null stream: every command makes a span, its
  persistence child spans, metric records and one log line; once more with
  ``persistence_spans="commit"`` (one ``COMMIT`` span instead of the steps).
* **SDK off**: no provider (the API's no-ops), structlog filtered at WARNING.
* **eventsourcing** on SQLite, plain and with what a user adds to it for
  traces alone: OpenTelemetry's sqlite3 auto-instrumentation on its
  connections and one span per command, on the same tracer provider.

Run at our default durability (WAL + FULL, the targets) and at WAL + NORMAL,
where the database's share is smaller so observability weighs more. Besides
wall time, each case's main-thread CPU time per command is recorded: both
sides' telemetry runs on that thread, and CPU time leaves out the fsync wait.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Awaitable, Callable
from importlib import metadata
from typing import Any

from benchmarks.harness import (
    Case,
    Config,
    Target,
    WorkloadResult,
    interleave,
    ratio,
    summarize,
)
from benchmarks.logs import configure_filtered, configure_json

NAME = "observability"
TITLE = "3. Observability cost: persisted command on SQLite, SDK on vs off"

TARGETS = [
    Target(
        "observability_cost_full",
        "sdk_on_vs_off_full",
        "<=",
        1.3,
        "SQLite WAL+FULL (default): SDK on (batch spans, metric reader, JSON logs) costs "
        "<= 1.3x SDK off",
    ),
    Target(
        "observability_cost_commit_span_full",
        "sdk_on_commit_vs_off_full",
        "<=",
        1.15,
        'SQLite WAL+FULL: SDK on with persistence_spans="commit" costs <= 1.15x SDK off',
    ),
    Target(
        "observability_vs_eventsourcing_traces",
        "ours_minus_eventsourcing_added_us",
        "<=",
        0.0,
        "WAL+FULL: our whole telemetry (spans, metrics, log line) adds no more per command "
        "than sqlite3 auto-instrumentation + a command span add to eventsourcing "
        "(per-round median of (ours on - off) - (eventsourcing traced - plain), in µs)",
    ),
]


class MainThreadCpu:
    """Wraps a case's ``run``: main-thread CPU time per op of every timed slice.

    Telemetry (ours and the peer's) runs on the event loop's thread, so its
    CPU time there is what it costs, without the fsync wait that makes wall
    times at FULL swing by milliseconds when other processes use the disk.
    """

    def __init__(self, run: Callable[[int], Awaitable[None]]) -> None:
        self._run = run
        self.per_op_ns: list[float] = []

    async def __call__(self, n: int) -> None:
        start = time.thread_time_ns()
        await self._run(n)
        self.per_op_ns.append((time.thread_time_ns() - start) / n)

    def reset(self) -> None:
        """Forget the warm-up and calibration slices (the harness's ``on_timed``)."""
        self.per_op_ns.clear()


def pipeline_listing(
    *,
    tracer_provider: Any,
    meter_provider: Any,
    logger_name: str,
    persistence_spans: str | None = None,
) -> Callable[..., list[Any]]:
    """Workload 4's pipeline, listed, with these providers and ``persistence_spans``.

    ``persistence_spans=None`` keeps the listing's own (``CQRS_BENCH_PERSISTENCE_SPANS``,
    default ``steps``).
    """
    from benchmarks.persisted import explicit_pipeline
    from cqrs_ddd_core.middleware import TracingMiddleware

    def listed(*args: Any) -> list[Any]:
        middlewares = explicit_pipeline(
            *args,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            logger_name=logger_name,
        )
        if persistence_spans is not None:
            for index, middleware in enumerate(middlewares):
                if isinstance(middleware, TracingMiddleware):
                    middlewares[index] = TracingMiddleware(
                        tracer_provider=tracer_provider,
                        persistence_spans=persistence_spans,  # type: ignore[arg-type]
                    )
        return middlewares

    return listed


async def run(cfg: Config) -> WorkloadResult:
    from benchmarks.peers.eventsourcing_app import (
        sender,
        sqlite_app,
        sqlite_settings,
        traced_sender,
        traced_sqlite_app,
    )
    from benchmarks.persisted import build_persisted, persistence_spans
    from benchmarks.telemetry import metric_names, sdk_on
    from cqrs_ddd_core.adapters.sqlalchemy import create_engine, create_tables

    telemetry, exporter, registry = sdk_on()
    tracer_provider = telemetry.tracer_provider
    engines: list[Any] = []
    cases: list[Case] = []
    cpu: dict[str, MainThreadCpu] = {}
    # (name, SDK on, synchronous, persistence_spans: None = the suite's setting)
    ours = [
        ("sdk_on_full", True, "FULL", None),
        ("sdk_off_full", False, "FULL", None),
        ("sdk_on_commit_full", True, "FULL", "commit"),
        ("sdk_on_normal", True, "NORMAL", None),
        ("sdk_off_normal", False, "NORMAL", None),
    ]
    try:
        for name, on, sync, spans in ours:
            engine = create_engine(
                f"sqlite:///{os.path.join(cfg.workdir, f'obs_{name}.sqlite3')}",
                sqlite_synchronous=sync,
            )
            engines.append(engine)
            await create_tables(engine)
            listing = pipeline_listing(
                tracer_provider=tracer_provider if on else None,
                meter_provider=telemetry.meter_provider if on else None,
                logger_name=f"bench.dispatch.{name}",
                persistence_spans=spans,
            )
            persisted = build_persisted(engine, name, middlewares=listing)
            # Each logging middleware keeps the structlog set-up current at its
            # first use (cache_logger_on_first_use): JSON for "on", filtered for "off".
            (configure_json if on else configure_filtered)()
            await persisted.sender()(1)
            label = (
                f"SDK on{'' if spans is None else f', {spans} span'}, JSON logs, WAL+{sync}"
                if on
                else f"SDK off, logs filtered, WAL+{sync}"
            )
            cpu[name] = MainThreadCpu(persisted.sender())
            cases.append(Case(name, label, cpu[name], min_ops=5, on_timed=cpu[name].reset))
        es_plain = sqlite_app(os.path.join(cfg.workdir, "obs_es_plain.sqlite3"), "FULL")
        es_traced = traced_sqlite_app(
            os.path.join(cfg.workdir, "obs_es_traced.sqlite3"), "FULL", tracer_provider
        )
        es_file = sqlite_settings(es_traced)
        cpu["eventsourcing_plain_full"] = MainThreadCpu(sender(es_plain))
        cpu["eventsourcing_traced_full"] = MainThreadCpu(traced_sender(es_traced, tracer_provider))
        cases += [
            Case(
                name,
                label,
                cpu[name],
                min_ops=5,
                on_timed=cpu[name].reset,
            )
            for name, label in (
                ("eventsourcing_plain_full", "eventsourcing SQLite, no telemetry, WAL+FULL"),
                (
                    "eventsourcing_traced_full",
                    "eventsourcing SQLite + sqlite3 auto-instrumentation + command span, WAL+FULL",
                ),
            )
        ]
        telemetry.force_flush()
        before = exporter.spans
        await cases[-1].run(20)
        telemetry.force_flush()
        es_spans_per_command = (exporter.spans - before) / 20
        stats = await interleave(cases, cfg, io=True)
        telemetry.force_flush()
        seen = metric_names(registry)
    finally:
        for engine in engines:
            await engine.dispose()
        telemetry.shutdown()
    result = WorkloadResult(NAME, TITLE, cases=stats)
    result.ratios = [
        ratio(
            stats,
            "sdk_on_vs_off_full",
            "sdk_on_full",
            "sdk_off_full",
            "WAL+FULL: time with the SDK on / off",
        ),
        ratio(
            stats,
            "sdk_on_commit_vs_off_full",
            "sdk_on_commit_full",
            "sdk_off_full",
            'WAL+FULL: time with the SDK on (persistence_spans="commit") / off',
        ),
        ratio(
            stats,
            "sdk_on_vs_off_normal",
            "sdk_on_normal",
            "sdk_off_normal",
            "WAL+NORMAL: time with the SDK on / off",
        ),
        ratio(
            stats,
            "eventsourcing_traced_vs_plain_full",
            "eventsourcing_traced_full",
            "eventsourcing_plain_full",
            "WAL+FULL: eventsourcing with sqlite3 auto-instrumentation + command span / plain",
        ),
    ]
    by = {c.name: c for c in stats}
    ours_cpu = _diff(cpu["sdk_on_full"].per_op_ns, cpu["sdk_off_full"].per_op_ns)
    es_cpu = _diff(
        cpu["eventsourcing_traced_full"].per_op_ns, cpu["eventsourcing_plain_full"].per_op_ns
    )
    ours_added = _added(by["sdk_on_full"], by["sdk_off_full"])
    es_added = _added(by["eventsourcing_traced_full"], by["eventsourcing_plain_full"])
    result.figures = {
        "observability_us_full": round(statistics.median(ours_added) / 1000, 1),
        "observability_commit_span_us_full": round(
            statistics.median(_added(by["sdk_on_commit_full"], by["sdk_off_full"])) / 1000, 1
        ),
        "observability_us_normal": round(
            statistics.median(_added(by["sdk_on_normal"], by["sdk_off_normal"])) / 1000, 1
        ),
        "eventsourcing_traces_us_full": round(statistics.median(es_added) / 1000, 1),
        "ours_minus_eventsourcing_added_us": round(
            statistics.median(a - b for a, b in zip(ours_added, es_added, strict=True)) / 1000, 1
        ),
        "eventsourcing_spans_per_command": es_spans_per_command,
        "main_thread_cpu_us": {
            name: round(statistics.median(meter.per_op_ns) / 1000, 1) for name, meter in cpu.items()
        },
        "ours_added_cpu_us_full": round(statistics.median(ours_cpu) / 1000, 1),
        "ours_commit_span_added_cpu_us_full": round(
            statistics.median(
                _diff(cpu["sdk_on_commit_full"].per_op_ns, cpu["sdk_off_full"].per_op_ns)
            )
            / 1000,
            1,
        ),
        "eventsourcing_added_cpu_us_full": round(statistics.median(es_cpu) / 1000, 1),
        "spans_exported": exporter.spans,
        "metrics_seen": seen,
    }
    result.settings = {
        "pipeline": "tracing -> logging -> metrics -> validation -> unit_of_work -> "
        "event_persistence -> outbox -> handler",
        "sdk_on": "TracerProvider + BatchSpanProcessor(discarding exporter), MeterProvider + "
        "the Prometheus reader (own registry), injected; structlog JSON (with trace ids) "
        "at INFO to /dev/null",
        "sdk_off": "no providers (OpenTelemetry API no-ops); structlog filtered at WARNING",
        "persistence_spans": persistence_spans(),
        "eventsourcing_traced": "the same TracerProvider (BatchSpanProcessor, discarding "
        "exporter); SQLite3Instrumentor.instrument_connection on its pool's connections; "
        "one start_as_current_span per command",
        "eventsourcing_file": es_file,
        "opentelemetry_instrumentation_sqlite3": metadata.version(
            "opentelemetry-instrumentation-sqlite3"
        ),
        "added_us": "per round: (time on - time off); medians of those, and of the "
        "per-round difference between ours and eventsourcing's",
        "cpu_us": "main-thread CPU time (time.thread_time_ns) per command of the same "
        "timed slices: where both sides' telemetry runs; our writer thread's SQL is not in it",
    }
    if exporter.spans == 0:
        result.notes.append("no span reached the exporter: the SDK-on case traced nothing")
    if es_spans_per_command < 2:
        result.notes.append("eventsourcing's traced case made fewer than 2 spans per command")
    return summarize(result, TARGETS)


def _added(on: Any, off: Any) -> list[float]:
    """Per round, ns per op that ``on`` adds to ``off`` (both slices ran in that round)."""
    return _diff(on.per_op_ns, off.per_op_ns)


def _diff(on: list[float], off: list[float]) -> list[float]:
    return [a - b for a, b in zip(on, off, strict=True)]
