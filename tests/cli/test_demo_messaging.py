"""``cqrs-ddd demo --broker-url``: the relay and the billing service beside the workload,
checked here again against both databases and the broker."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

from cqrs_ddd_advanced_core.adapters.rabbitmq import queue_depths
from tests.cli.demo_process import run_demo


def test_the_demo_with_a_broker_bills_every_order_and_invoice_event_exactly_once(
    tmp_path: Path, rabbitmq_url: str
) -> None:
    shop_db, billing_db = tmp_path / "shop.db", tmp_path / "billing.db"
    result = run_demo(
        [
            "-n",
            "300",
            "--seed",
            "4",
            "--json",
            "--database-url",
            f"sqlite:///{shop_db}",
            "--billing-database-url",
            f"sqlite:///{billing_db}",
            "--broker-url",
            rabbitmq_url,
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    messaging = summary["messaging"]
    assert messaging["ok"], messaging
    assert messaging["published"] == summary["outbox"]["total"]
    billed = sum(summary["outbox"]["by_aggregate_type"].get(t, 0) for t in ("Order", "Invoice"))
    assert messaging["consumed"] == billed > 0
    assert messaging["dead_letters"] == {"outbox": 0, "consumer": 0}
    # Independently of the demo's own checks: both databases and the broker.
    with sqlite3.connect(shop_db) as shop, sqlite3.connect(billing_db) as billing:
        sent = {
            row[0]
            for row in shop.execute(
                "SELECT message_id FROM outbox WHERE aggregate_type IN ('Order', 'Invoice')"
            )
        }
        unpublished = shop.execute("SELECT count(*) FROM outbox WHERE status != 'published'")
        ledger = [row[0] for row in billing.execute("SELECT message_id FROM billing_ledger")]
        inbox = billing.execute("SELECT count(*) FROM inbox WHERE consumer = 'billing'")
        invoices = billing.execute("SELECT count(*) FROM billing_charges").fetchone()[0]
        assert unpublished.fetchone()[0] == 0
        assert sorted(ledger) == sorted(sent)
        assert inbox.fetchone()[0] == len(sent)
        assert invoices == summary["outbox"]["by_aggregate_type"].get("Invoice", 0)
    depths = asyncio.run(queue_depths(rabbitmq_url, [*messaging["queue_depths"]]))
    assert not any(depths.values()), depths


def test_the_demo_stops_with_a_clear_error_when_the_broker_is_unreachable(
    tmp_path: Path,
) -> None:
    result = run_demo(["-n", "10", "--broker-url", "amqp://guest:guest@127.0.0.1:1/"], cwd=tmp_path)
    assert result.returncode == 1
    assert "RabbitMQ is unreachable" in result.stderr
