"""The demo's tap (the process's global meter provider) and the library's observable counters.

The library registers ``cqrs.events.stored`` / ``cqrs.outbox.enqueued`` once per
process on the global provider; the tap points each run at its own provider, so
it registers them again there, counting from the run's start. In a fresh
interpreter (the global provider is set once): a mediator built before the tap
was installed, then two runs in a row, each with mediators of its own. Every
run's provider must report exactly that run's commits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from opentelemetry.metrics import NoOpMeterProvider
    from cqrs_ddd_advanced_core import EventSourcedMediator, EventSourcedPersistenceOrchestrator
    from cqrs_ddd_advanced_core.cli.telemetry import install_tap
    from cqrs_ddd_core.adapters.memory import (
        InMemoryEventStore, InMemoryOutboxStore, InMemoryUnitOfWork,
    )
    from cqrs_ddd_core.cqrs import CommandResponse, HandlerRegistry
    from cqrs_ddd_core.testing import MetricCapture
    from tests.observability.app import Order, OrderPlaced, PlaceOrder

    async def place_order(command):
        order = Order(id=command.order_id)
        order.record_event(OrderPlaced(amount=command.amount))
        return CommandResponse.from_aggregates(order.id, order)

    def mediator():
        registry = HandlerRegistry()
        registry.register_command_handler(PlaceOrder, place_order)
        orchestrator = EventSourcedPersistenceOrchestrator(
            default_event_store=InMemoryEventStore()
        )
        orchestrator.register_event_sourced_type(Order)
        return EventSourcedMediator(
            registry, InMemoryUnitOfWork, orchestrator, outbox_store=InMemoryOutboxStore()
        )

    sent = 0
    def send(m, count):
        global sent
        async def main():
            global sent
            for _ in range(count):
                sent += 1
                await m.send(PlaceOrder(order_id=f"o-{sent}", amount=1))
        asyncio.run(main())

    order = {"cqrs.aggregate.type": "Order"}
    early = mediator() if sys.argv[1] == "built_before_the_tap" else None
    if early is not None:
        send(early, 1)  # before any run: no run counts it
    tap = install_tap()
    seen = []
    for run, (fresh, reused) in enumerate([(2, 1), (4, 3)]):
        capture = MetricCapture()
        tap.inner = capture.meter_provider  # what start_telemetry does
        send(mediator(), fresh)
        if early is not None:
            send(early, reused)
        seen.append([
            capture.value("cqrs.events.stored", order),
            capture.value("cqrs.outbox.enqueued", order),
        ])
        tap.inner = NoOpMeterProvider()  # what DemoTelemetry.shutdown does
        capture.shutdown()
        if early is None:
            send(mediator(), 5)  # between runs: no run counts it
    print(json.dumps(seen))
    """
)


@pytest.mark.parametrize("case", ["built_before_the_tap", "built_in_each_run"])
def test_each_run_reports_its_own_commits_to_its_own_provider(case: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, case],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr[-4000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])

    if case == "built_before_the_tap":
        assert seen == [[3, 3], [7, 7]]
    else:
        assert seen == [[2, 2], [4, 4]]
