"""Workload 6: resident memory over 100,000 persisted commands on SQLite.

The persisted command of workload 4 through the full pipeline (tracing,
logging, metrics, validation, unit of work, event persistence, outbox) with
everything switched on: the OpenTelemetry SDK (batch span processor, metric
reader, injected), JSON logs to a null stream. SQLite in WAL + NORMAL: the
durability level changes how long a commit waits, not what stays in memory.

Resident set size is read from ``/proc/self/statm`` (``resource``'s peak RSS
where there is no ``/proc``) every 1% of the run. Growth is the highest
sample after the warm-up (the first 10% of the commands) minus the sample
at the end of the warm-up. The workload runs in its own process, like every
workload, so nothing else's garbage is counted.
"""

from __future__ import annotations

import gc
import os
import resource
import time
from functools import partial

from benchmarks.harness import Config, Target, WorkloadResult, summarize
from benchmarks.logs import configure_json

NAME = "memory"
TITLE = "6. Memory: 100,000 commands through the full pipeline on SQLite"

TARGETS = [
    Target(
        "memory_flat",
        "rss_growth_mb",
        "<=",
        10.0,
        "100,000 commands, full pipeline, SQLite: RSS grows < 10 MB after warm-up",
    ),
]

COMMANDS = 100_000
QUICK_COMMANDS = 600

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """The process's resident set size now (peak RSS where ``/proc`` is missing)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def run(cfg: Config) -> WorkloadResult:
    from benchmarks.persisted import build_persisted, explicit_pipeline
    from benchmarks.telemetry import sdk_on
    from cqrs_ddd_core.adapters.sqlalchemy import create_engine, create_tables

    total = QUICK_COMMANDS if cfg.quick else COMMANDS
    warmup = total // 10
    every = max(total // 100, 1)
    telemetry, exporter, _registry = sdk_on()
    configure_json()
    engine = create_engine(
        f"sqlite:///{os.path.join(cfg.workdir, 'memory.sqlite3')}", sqlite_synchronous="NORMAL"
    )
    samples: list[tuple[int, int]] = []  # (commands done, RSS bytes)
    try:
        await create_tables(engine)
        listing = partial(
            explicit_pipeline,
            tracer_provider=telemetry.tracer_provider,
            meter_provider=telemetry.meter_provider,
        )
        persisted = build_persisted(engine, "mem", middlewares=listing)
        send, make = persisted.mediator.send, persisted.command
        gc.collect()
        samples.append((0, rss_bytes()))
        started = time.perf_counter()
        for done in range(1, total + 1):
            await send(make())
            if done % every == 0:
                samples.append((done, rss_bytes()))
        elapsed = time.perf_counter() - started
        telemetry.force_flush()
    finally:
        await engine.dispose()
        telemetry.shutdown()
    at_warmup = next(rss for done, rss in samples if done >= warmup)
    after = [rss for done, rss in samples if done >= warmup]
    growth = max(after) - at_warmup
    tail = samples[len(samples) // 2 :]
    slope = (tail[-1][1] - tail[0][1]) / max(tail[-1][0] - tail[0][0], 1) * 10_000
    mb = 1024 * 1024
    result = WorkloadResult(NAME, TITLE)
    result.figures = {
        "commands": total,
        "warmup_commands": warmup,
        "rss_start_mb": round(samples[0][1] / mb, 2),
        "rss_at_warmup_mb": round(at_warmup / mb, 2),
        "rss_end_mb": round(samples[-1][1] / mb, 2),
        "rss_max_mb": round(max(rss for _, rss in samples) / mb, 2),
        "rss_growth_mb": round(growth / mb, 2),
        "second_half_slope_kb_per_10k": round(slope / 1024, 1),
        "commands_per_s": round(total / elapsed, 1),
        "spans_exported": exporter.spans,
        "samples_mb": [round(rss / mb, 2) for _, rss in samples[:: max(len(samples) // 20, 1)]],
    }
    result.settings = {
        "pipeline": persisted.mediator.pipeline.describe(),
        "telemetry": "SDK on (BatchSpanProcessor, metric reader), JSON logs to /dev/null",
        "sqlite": "WAL + NORMAL",
        "rss": "/proc/self/statm resident pages",
    }
    if cfg.quick:
        result.notes.append(f"--quick: {total} commands only; the figure means nothing")
    return summarize(result, TARGETS)
