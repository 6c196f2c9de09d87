"""The global meter provider's counts, whenever the SDK is installed and however mediators use it.

The global provider can be set once per process, so each case runs in a fresh
interpreter: mediators built before the SDK (the API's proxy meter forwards
their registration when the SDK arrives), after it, with the provider passed
explicitly, and with a provider passed explicitly *before* it was made the
global one (its registration then comes first in the SDK's meter, and the
global totals are reported through it). Each mediator sends its own number of
commands, so a lost or a doubled mediator shows in the total.
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
    from opentelemetry import metrics
    from cqrs_ddd_advanced_core import EventSourcedMediator, EventSourcedPersistenceOrchestrator
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

    def mediator(meter_provider=None):
        registry = HandlerRegistry()
        registry.register_command_handler(PlaceOrder, place_order)
        orchestrator = EventSourcedPersistenceOrchestrator(
            default_event_store=InMemoryEventStore()
        )
        orchestrator.register_event_sourced_type(Order)
        return EventSourcedMediator(
            registry, InMemoryUnitOfWork, orchestrator,
            outbox_store=InMemoryOutboxStore(), meter_provider=meter_provider,
        )

    capture, other = MetricCapture(), MetricCapture()
    sdk = capture.meter_provider
    built = []  # (mediator, commands to send)
    case = sys.argv[1]
    if case == "installed_after":
        built.append((mediator(), 2))  # the proxy meter's registration
        metrics.set_meter_provider(sdk)
        built.append((mediator(), 3))
        built.append((mediator(sdk), 4))  # the global provider, passed explicitly
    elif case == "installed_before":
        metrics.set_meter_provider(sdk)
        built.append((mediator(), 2))
        built.append((mediator(sdk), 3))
        built.append((mediator(), 4))
    elif case == "passed_before_it_became_global":
        built.append((mediator(sdk), 1))
        built.append((mediator(), 2))  # proxy: dropped by the SDK when it forwards
        metrics.set_meter_provider(sdk)
        built.append((mediator(), 4))
        built.append((mediator(sdk), 8))
    built.append((mediator(other.meter_provider), 16))  # another provider: not in the totals

    async def main():
        n = 0
        for m, count in built:
            for _ in range(count):
                n += 1
                await m.send(PlaceOrder(order_id=f"o-{n}", amount=1))

    asyncio.run(main())
    order = {"cqrs.aggregate.type": "Order"}
    print(json.dumps({
        "events_stored": capture.value("cqrs.events.stored", order),
        "outbox_enqueued": capture.value("cqrs.outbox.enqueued", order),
        "points": len(capture.points("cqrs.events.stored")),
        "other": other.value("cqrs.events.stored", order),
    }))
    """
)


@pytest.mark.parametrize(
    ("case", "total"),
    [("installed_after", 9), ("installed_before", 9), ("passed_before_it_became_global", 15)],
)
def test_the_global_provider_reports_every_mediator_once(case: str, total: int) -> None:
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

    assert seen == {"events_stored": total, "outbox_enqueued": total, "points": 1, "other": 16}
