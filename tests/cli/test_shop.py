"""The demo shop and its workload, in process on the in-memory adapters; and its example."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from cqrs_ddd_advanced_core.demo import RunStats, Shop, UnitOfWorkCapture, Workload
from cqrs_ddd_advanced_core.demo.domain import OrderClosedError, OrderLine, UserPreferences
from cqrs_ddd_advanced_core.demo.messages import (
    AddOrderLine,
    CancelOrder,
    ConfirmOrder,
    GetOrderSummary,
    GetPreferences,
    PlaceOrder,
    UpdatePreferences,
)
from cqrs_ddd_advanced_core.demo.stats import LatencySamples, quantile
from cqrs_ddd_core.adapters.memory import (
    InMemoryAuditStore,
    InMemoryEventStore,
    InMemoryOutboxStore,
    InMemoryStateRepository,
    InMemoryUnitOfWork,
)
from cqrs_ddd_core.exceptions import RecordNotFoundError

ROOT = Path(__file__).resolve().parents[2]
LINE = OrderLine(sku="mug", quantity=3, unit_price_cents=450)


class MemoryShop:
    def __init__(self) -> None:
        self.events = InMemoryEventStore()
        self.outbox = InMemoryOutboxStore()
        self.audit = InMemoryAuditStore()
        self.shop = Shop(
            uow_factory=UnitOfWorkCapture(InMemoryUnitOfWork),
            event_store=self.events,
            outbox_store=self.outbox,
            preferences=InMemoryStateRepository(UserPreferences),
            audit_store=self.audit,
        )

    async def stored(self) -> Counter[str]:
        return Counter(e.aggregate_type for e in await self.events.read_all(limit=1_000_000))


async def test_the_default_pipeline_with_audit_runs_every_command() -> None:
    memory = MemoryShop()
    shop = memory.shop
    assert shop.mediator.pipeline.describe() == (
        "tracing -> logging -> metrics -> validation -> unit_of_work -> event_persistence "
        "-> outbox -> audit -> handler"
    )
    await shop.mediator.send(PlaceOrder(order_id="o-1", customer_id="c-1", lines=[LINE]))
    total = await shop.mediator.send(AddOrderLine(order_id="o-1", line=LINE))
    assert total.result == 2 * 3 * 450
    confirmed = await shop.mediator.send(ConfirmOrder(order_id="o-1"))
    assert confirmed.result == "inv-o-1"
    summary = await shop.mediator.query(GetOrderSummary(order_id="o-1"))
    assert (summary.status, summary.lines, summary.total_cents, summary.version) == (
        "confirmed",
        2,
        2700,
        3,
    )
    invoice = await shop.invoices.load("inv-o-1")
    assert (invoice.order_id, invoice.amount_cents, invoice.version) == ("o-1", 2700, 1)
    with pytest.raises(OrderClosedError, match="Order o-1 is confirmed: cannot cancel it"):
        await shop.mediator.send(CancelOrder(order_id="o-1"))
    with pytest.raises(RecordNotFoundError):
        await shop.mediator.query(GetOrderSummary(order_id="nope"))

    await shop.mediator.send(UpdatePreferences(user_id="u-1", language="fr", currency="EUR"))
    await shop.mediator.send(UpdatePreferences(user_id="u-1", language="de", currency="CHF"))
    preferences = await shop.mediator.query(GetPreferences(user_id="u-1"))
    assert preferences is not None
    assert (preferences.language, preferences.currency, preferences.version) == ("de", "CHF", 2)
    assert await shop.mediator.query(GetPreferences(user_id="u-2")) is None

    # Preferences' events reach the outbox, never the event store.
    assert await memory.stored() == Counter({"Order": 3, "Invoice": 1})
    assert len(memory.outbox) == 4 + 2
    assert shop.nested_commands == Counter({"IssueInvoice": 1})
    outcomes = Counter((r.message_type, r.outcome) for r in await memory.audit.list_records())
    assert outcomes[("CancelOrder", "error")] == 1
    assert outcomes[("IssueInvoice", "success")] == 1


async def test_the_workload_counts_what_it_committed() -> None:
    memory = MemoryShop()
    stats = await Workload(memory.shop, commands=300, concurrency=4, seed=11).run()
    assert stats.commands == 300
    assert not stats.interrupted
    assert stats.succeeded + sum(stats.errors.values()) == 300
    assert sum(stats.commands_by_type.values()) == 300
    assert stats.queries > 0
    stored = await memory.stored()
    assert dict(stats.events_stored) == dict(stored)
    assert sum(stats.outbox_enqueued.values()) == len(memory.outbox)
    assert stats.nested_by_type["IssueInvoice"] >= stored["Invoice"] > 0
    assert len(stats.persistence_latency) == stats.succeeded
    assert set(stats.persistence_by_aggregate) == {"Order", "Invoice", "UserPreferences"}
    # Races on one order: the later command is refused by the order itself here
    # (in memory a dispatch never waits, so the two do not overlap).
    assert stats.errors  # at least the refusals
    summary = stats.as_dict()
    assert summary["dispatches_by_type"]["IssueInvoice"] == stats.nested_by_type["IssueInvoice"]
    for figures in (summary["command_latency_s"], summary["persistence_latency_s"]):
        assert 0 <= figures["p50"] <= figures["p95"] <= figures["p99"]


async def test_stop_cancels_the_senders() -> None:
    memory = MemoryShop()
    reached = asyncio.Event()

    def progress(stats: RunStats) -> None:
        if stats.commands >= 50:
            reached.set()

    workload = Workload(memory.shop, commands=10_000_000, concurrency=3, on_command=progress)
    task = asyncio.create_task(workload.run())
    await reached.wait()
    workload.stop()
    stats = await task
    assert stats.interrupted
    assert 50 <= stats.commands < 10_000_000


def test_nearest_rank_quantiles() -> None:
    assert math.isnan(quantile([], 0.5))
    values = [float(v) for v in range(1, 101)]
    assert quantile(values, 0.5) == 50.0
    assert quantile(values, 0.95) == 95.0
    assert quantile(values, 0.99) == 99.0
    assert quantile(values, 1.0) == 100.0
    assert quantile([7.0], 0.99) == 7.0
    with pytest.raises(ValueError, match="within"):
        quantile(values, 1.5)
    samples = LatencySamples([0.3, 0.1, 0.2])
    assert samples.quantiles() == {"p50": 0.2, "p95": 0.3, "p99": 0.3}


@pytest.mark.parametrize("mode", [[], ["--memory"]], ids=["sqlite", "memory"])
def test_the_shop_example_runs(mode: list[str]) -> None:
    completed = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "shop" / "run.py"), *mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    lines = completed.stdout.splitlines()
    assert lines[:4] == [
        "pipeline: tracing -> logging -> metrics -> validation -> unit_of_work -> "
        "event_persistence -> outbox -> audit -> handler",
        "order-1: confirmed, 2 lines, total 2899 cents, version 3",
        "invoice inv-order-1: 2899 cents for order-1",
        "preferences of alice: fr/EUR, version 1",
    ]
    assert lines[4].startswith("workload: 200 commands, ")
    assert lines[5].startswith("workload: persistence p50 ")
    assert completed.stderr == ""
