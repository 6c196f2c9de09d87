"""Workload 3: what observability costs on a persisted command (SQLite).

The same persisted command (event + outbox + state, see workload 4) through
the same pipeline (tracing -> logging -> metrics -> validation -> unit_of_work
-> event_persistence -> outbox), twice, side by side:

* **SDK on**: a ``TracerProvider`` with a ``BatchSpanProcessor`` over an
  exporter that discards, a ``MeterProvider`` with the Prometheus reader
  (as ``setup_telemetry(prometheus=True)`` builds it; both injected into the
  middlewares), and structlog rendering JSON lines (with
  trace ids) at INFO to a null stream: every command makes a span, its
  persistence child spans, histogram points and one log line.
* **SDK off**: no provider (the API's no-ops), structlog filtered at WARNING.

Run at our default durability (WAL + FULL, the target) and at WAL + NORMAL,
where the database's share is smaller so observability weighs more.
"""

from __future__ import annotations

import os
from typing import Any

from benchmarks.harness import Case, Config, Target, WorkloadResult, interleave, ratio, summarize
from benchmarks.logs import configure_filtered, configure_json

NAME = "observability"
TITLE = "3. Observability cost: persisted command on SQLite, SDK on vs off"

TARGETS = [
    Target(
        "observability_cost_full",
        "sdk_on_vs_off_full",
        "<=",
        1.15,
        "SQLite WAL+FULL (default): SDK on (batch spans, metric reader, JSON logs) costs "
        "<= 1.15x SDK off",
    ),
]


async def run(cfg: Config) -> WorkloadResult:
    from functools import partial

    from benchmarks.persisted import build_persisted, explicit_pipeline, persistence_spans
    from benchmarks.telemetry import metric_names, sdk_on
    from cqrs_ddd_core.adapters.sqlalchemy import create_engine, create_tables

    telemetry, exporter, registry = sdk_on()
    engines: list[Any] = []
    cases: list[Case] = []
    try:
        for sync in ("FULL", "NORMAL"):
            low = sync.lower()
            built = {}
            for mode in ("on", "off"):
                path = os.path.join(cfg.workdir, f"obs_{mode}_{low}.sqlite3")
                engine = create_engine(f"sqlite:///{path}", sqlite_synchronous=sync)
                engines.append(engine)
                await create_tables(engine)
                listing = partial(
                    explicit_pipeline,
                    tracer_provider=telemetry.tracer_provider if mode == "on" else None,
                    meter_provider=telemetry.meter_provider if mode == "on" else None,
                    logger_name=f"bench.dispatch.{mode}",
                )
                persisted = build_persisted(engine, f"{mode}-{low}", middlewares=listing)
                # Each logging middleware keeps the structlog set-up current at its
                # first use (cache_logger_on_first_use): JSON for "on", filtered for "off".
                (configure_json if mode == "on" else configure_filtered)()
                await persisted.sender()(1)
                built[mode] = persisted
            cases += [
                Case(
                    f"sdk_on_{low}",
                    f"SDK on, JSON logs, WAL+{sync}",
                    built["on"].sender(),
                    min_ops=5,
                ),
                Case(
                    f"sdk_off_{low}",
                    f"SDK off, logs filtered, WAL+{sync}",
                    built["off"].sender(),
                    min_ops=5,
                ),
            ]
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
            "sdk_on_vs_off_normal",
            "sdk_on_normal",
            "sdk_off_normal",
            "WAL+NORMAL: time with the SDK on / off",
        ),
    ]
    by = {c.name: c.median_ns for c in stats}
    result.figures = {
        "observability_us_full": round((by["sdk_on_full"] - by["sdk_off_full"]) / 1000, 1),
        "observability_us_normal": round((by["sdk_on_normal"] - by["sdk_off_normal"]) / 1000, 1),
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
    }
    if exporter.spans == 0:
        result.notes.append("no span reached the exporter: the SDK-on case traced nothing")
    return summarize(result, TARGETS)
