"""A stand-in for ``cqrs-ddd demo --metrics-port``: the library's metrics with a synthetic workload.

It uses the OpenTelemetry SDK ``MeterProvider`` with a ``PrometheusMetricReader`` and
records the instruments exactly as docs/design.md ("Telemetry names") fixes them:
meter ``cqrs_ddd``; ``cqrs.command.duration`` / ``cqrs.query.duration`` (histograms,
unit ``s``, attributes ``cqrs.message.type``, ``cqrs.outcome``, ``error.type`` on
failure); ``cqrs.persistence.duration`` (histogram, unit ``s``, ``cqrs.aggregate.type``);
``cqrs.events.stored`` (counter, unit ``{event}``, ``cqrs.aggregate.type``); explicit
buckets in seconds (as ``cqrs_ddd_core.telemetry.instruments`` creates them).

Run::

    python tests/dashboards/_emitter.py --metrics-port 9464 --duration 6 --summary-json out.json

It serves ``/metrics`` on 127.0.0.1 from the start, records for ``--duration`` seconds
(seeded, so reproducible), writes a JSON summary of exactly what it recorded (counts,
nearest-rank quantiles, the time the workload ended), then keeps serving until
SIGTERM/SIGINT or ``--serve-seconds``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import signal
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from types import FrameType

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import start_http_server

BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
QUANTILES = (0.5, 0.95, 0.99)

# (command type, cqrs.aggregate.type, events it persists, median persistence latency in s).
# The library labels a commit that persisted no events with aggregate type "none".
COMMANDS = [
    ("PlaceOrder", "Order", 2, 0.0030),
    ("AddOrderLine", "Order", 1, 0.0025),
    ("ConfirmOrder", "Order", 1, 0.0028),
    ("CancelOrder", "Order", 1, 0.0027),
    ("IssueInvoice", "Invoice", 1, 0.0040),
    ("UpdateUserPreferences", "none", 0, 0.0015),  # @non_event_sourced: state only
]
# (error type, probability per command) — concurrency conflicts are expected in the demo.
ERRORS = [
    ("cqrs_ddd_core.exceptions.ConcurrencyError", 0.06),
    ("cqrs_ddd_core.exceptions.MessageValidationError", 0.03),
]
QUERIES = [("GetOrder", 0.0006), ("ListOrders", 0.0020), ("GetInvoice", 0.0007)]


def nearest_rank(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--duration", type=float, default=6.0, help="seconds of workload")
    parser.add_argument("--rate", type=float, default=200.0, help="commands per second")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--summary-json", type=Path, required=True)
    parser.add_argument(
        "--serve-seconds", type=float, default=300.0, help="serve after the workload"
    )
    args = parser.parse_args(argv)

    stop = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    reader = PrometheusMetricReader()
    provider = MeterProvider(
        metric_readers=[reader], resource=Resource.create({"service.name": "cqrs-ddd-demo"})
    )
    meter = provider.get_meter("cqrs_ddd", "0.1.0")
    command_duration = meter.create_histogram(
        "cqrs.command.duration",
        unit="s",
        description="Duration of command dispatch through the pipeline.",
        explicit_bucket_boundaries_advisory=BUCKETS,
    )
    query_duration = meter.create_histogram(
        "cqrs.query.duration",
        unit="s",
        description="Duration of query dispatch through the pipeline.",
        explicit_bucket_boundaries_advisory=BUCKETS,
    )
    persistence_duration = meter.create_histogram(
        "cqrs.persistence.duration",
        unit="s",
        description="Duration of persisting an aggregate's changes.",
        explicit_bucket_boundaries_advisory=BUCKETS,
    )
    events_stored = meter.create_counter(
        "cqrs.events.stored", unit="{event}", description="Events appended to an event store."
    )
    outbox_enqueued = meter.create_counter(
        "cqrs.outbox.enqueued", unit="{message}", description="Messages written to an outbox."
    )

    server, _thread = start_http_server(args.metrics_port, addr="127.0.0.1")
    print(json.dumps({"serving": args.metrics_port}), flush=True)

    rng = random.Random(args.seed)
    commands: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    events: Counter[str] = Counter()
    queries: Counter[str] = Counter()
    persistence_samples: dict[str, list[float]] = defaultdict(list)
    command_samples: list[float] = []

    started = time.time()
    period = 1.0 / args.rate
    next_tick = time.monotonic()
    while not stop and time.time() - started < args.duration:
        message_type, aggregate_type, n_events, median = rng.choice(COMMANDS)
        commands[message_type] += 1
        error_type = next((name for name, p in ERRORS if rng.random() < p), None)
        persistence = median * rng.lognormvariate(0.0, 0.5)
        if error_type is None:
            duration = persistence + 0.0004 * rng.lognormvariate(0.0, 0.3)
            persistence_duration.record(persistence, {"cqrs.aggregate.type": aggregate_type})
            persistence_samples[aggregate_type].append(persistence)
            if n_events:
                events_stored.add(n_events, {"cqrs.aggregate.type": aggregate_type})
                outbox_enqueued.add(n_events, {"cqrs.aggregate.type": aggregate_type})
                events[aggregate_type] += n_events
            attributes = {"cqrs.message.type": message_type, "cqrs.outcome": "success"}
        else:
            duration = 0.0006 * rng.lognormvariate(0.0, 0.5)
            if error_type.endswith("ConcurrencyError"):
                duration += persistence  # the conflict shows at append/commit time
            errors[error_type] += 1
            attributes = {
                "cqrs.message.type": message_type,
                "cqrs.outcome": "error",
                "error.type": error_type,
            }
        command_duration.record(duration, attributes)
        command_samples.append(duration)

        if rng.random() < 0.5:
            query_type, query_median = rng.choice(QUERIES)
            query_duration.record(
                query_median * rng.lognormvariate(0.0, 0.4),
                {"cqrs.message.type": query_type, "cqrs.outcome": "success"},
            )
            queries[query_type] += 1

        next_tick += period
        time.sleep(max(0.0, next_tick - time.monotonic()))

    summary = {
        "workload_started": started,
        "workload_ended": time.time(),
        "commands": sum(commands.values()),
        "commands_by_type": dict(commands),
        "errors_by_type": dict(errors),
        "queries": sum(queries.values()),
        "events_stored": sum(events.values()),
        "events_stored_by_aggregate_type": dict(events),
        "persistence_quantiles": {
            aggregate_type: {str(q): nearest_rank(samples, q) for q in QUANTILES}
            for aggregate_type, samples in persistence_samples.items()
        },
        "command_quantiles": {str(q): nearest_rank(command_samples, q) for q in QUANTILES},
    }
    tmp = args.summary_json.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(args.summary_json)  # atomic: a reader never sees half a summary
    print(json.dumps({"summary": str(args.summary_json)}), flush=True)

    deadline = time.monotonic() + args.serve_seconds
    while not stop and time.monotonic() < deadline:
        time.sleep(0.1)
    server.shutdown()
    provider.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
