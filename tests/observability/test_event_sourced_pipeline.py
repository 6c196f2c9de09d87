"""End to end through EventSourcedMediator's default pipeline and the global providers.

The global OpenTelemetry providers can be set once per process, so this runs
in a fresh interpreter: the mediator is built first (its middlewares resolve
the providers lazily), then the SDK is installed, then a command is sent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import asyncio, json
    from opentelemetry import metrics, trace
    from cqrs_ddd_advanced_core import EventSourcedMediator, EventSourcedPersistenceOrchestrator
    from cqrs_ddd_core.adapters.memory import (
        InMemoryEventStore, InMemoryOutboxStore, InMemoryUnitOfWork,
    )
    from cqrs_ddd_core.cqrs import CommandResponse, HandlerRegistry
    from cqrs_ddd_core.testing import MetricCapture, SpanCapture, capture_log_events
    from tests.observability.app import Order, OrderPlaced, PlaceOrder

    async def place_order(command):  # persistence is the pipeline's job here
        order = Order(id=command.order_id)
        order.record_event(OrderPlaced(amount=command.amount))
        return CommandResponse.from_aggregates(order.id, order)

    registry = HandlerRegistry()
    registry.register_command_handler(PlaceOrder, place_order)
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=InMemoryEventStore())
    orchestrator.register_event_sourced_type(Order)
    outbox = InMemoryOutboxStore()
    mediator = EventSourcedMediator(registry, InMemoryUnitOfWork, orchestrator, outbox_store=outbox)

    spans, meters = SpanCapture(), MetricCapture()
    trace.set_tracer_provider(spans.tracer_provider)
    metrics.set_meter_provider(meters.meter_provider)

    async def main():
        with capture_log_events() as logs:
            await mediator.send(PlaceOrder(order_id="o-1", amount=3))
        return logs, await outbox.claim_batch()

    logs, messages = asyncio.run(main())
    command = spans.named("command PlaceOrder")
    print(json.dumps({
        "describe": mediator.pipeline.describe(),
        "children": [s.name for s in spans.children(command)],
        "span": [format(command.context.trace_id, "032x"), format(command.context.span_id, "016x")],
        "outbox_traceparents": [m.trace_context.get("traceparent") for m in messages],
        "log_spans": [e.get("span_id") for e in logs],
        "events_stored": meters.value("cqrs.events.stored", {"cqrs.aggregate.type": "Order"}),
    }))
    """
)


def test_the_default_event_sourced_pipeline_traces_logs_and_counts_with_global_providers() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
    )
    seen = json.loads(done.stdout.strip().splitlines()[-1])

    assert seen["describe"] == (
        "tracing -> logging -> metrics -> validation -> unit_of_work -> event_persistence "
        "-> outbox -> handler"
    )
    assert seen["children"] == ["INSERT events", "INSERT outbox", "COMMIT"]
    trace_id, span_id = seen["span"]
    assert seen["outbox_traceparents"]
    for traceparent in seen["outbox_traceparents"]:
        assert traceparent.split("-")[1:3] == [trace_id, span_id]
    assert seen["log_spans"] == [span_id, span_id]
    assert seen["events_stored"] == 1
