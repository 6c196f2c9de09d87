"""THE PROOF for the messaging dashboard: its queries on a real Prometheus scraping a real
relay and consumer (real RabbitMQ, SQLite files), compared with what the run did.

The shop's relay publishes through RabbitMQ to a billing consumer; two outbox messages
are refused by the broker side until they become dead letters (so the lag grows), two
orders are refused by billing's handler until they are dead-lettered, and one message is delivered
twice (the inbox skips it). The library's metrics are served on a port that Prometheus
scrapes every second; once the run ended and Prometheus scraped it again, every panel
expression must return finite values above zero, and the counters must equal the run's.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from cqrs_ddd_advanced_core.adapters.rabbitmq import (
    ConsumerTopology,
    RabbitMQPublisher,
    RabbitMQSubscriber,
)
from cqrs_ddd_advanced_core.messaging import OutboxRelay
from cqrs_ddd_advanced_core.outbox import Backoff
from cqrs_ddd_core.persistence import OutboxMessage
from cqrs_ddd_core.telemetry.setup import setup_telemetry
from tests.support.backends import sqlite_engine
from tests.support.messaging import Billing, Shop, create_billing_tables, until
from tests.support.prometheus import (
    PrometheusServer,
    evaluate_dashboard,
    free_port,
    iter_panels,
    sample_values,
)
from tests.support.rabbitmq import rabbitmq_url, unique_name

__all__ = ["rabbitmq_url"]

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

JOB = "cqrs-ddd-messaging"
DASHBOARD = Path(__file__).resolve().parents[2] / "dashboards" / "grafana" / "messaging.json"
FAST = Backoff(initial=timedelta(milliseconds=20), factor=2, maximum=timedelta(milliseconds=100))


class RefusesOne:
    """The real publisher, except that the broker side refuses one message id."""

    def __init__(self, inner: RabbitMQPublisher) -> None:
        self.inner = inner
        self.refused: str | None = None

    async def publish(self, message: OutboxMessage) -> None:
        if (message.aggregate_id or "").startswith("undeliverable"):
            self.refused = message.message_id
            raise ConnectionError("refused by the test")
        await self.inner.publish(message)


@dataclass
class Run:
    prom: PrometheusServer
    published: int
    handled: int
    duplicates: int


@pytest.fixture
async def run(tmp_path: Path, rabbitmq_url: str) -> AsyncIterator[Run]:
    port = free_port()
    telemetry = setup_telemetry(
        "messaging-proof",
        traces=False,
        prometheus_port=port,
        prometheus_registry=CollectorRegistry(),
        set_global=False,
    )
    meters = telemetry.meter_provider
    (tmp_path / "shop").mkdir()
    (tmp_path / "billing").mkdir()
    exchange = unique_name("events")
    topology = ConsumerTopology(unique_name("billing"), partitions=2, exchange=exchange)
    subscriber = RabbitMQSubscriber(
        rabbitmq_url, topology, backoff=FAST, max_attempts=2, meter_provider=meters
    )
    await subscriber.declare()
    try:
        with PrometheusServer([f"127.0.0.1:{port}"], workdir=tmp_path, job=JOB) as prom:
            async with (
                sqlite_engine(tmp_path / "shop") as shop_db,
                sqlite_engine(tmp_path / "billing") as billing_db,
                RabbitMQPublisher(rabbitmq_url, exchange=exchange) as publisher,
            ):
                await create_billing_tables(billing_db)
                shop = Shop(shop_db)
                billing = Billing(billing_db, meter_provider=meters)
                billing.fail = lambda message: (message.aggregate_id or "").startswith("poison")
                refusing = RefusesOne(publisher)
                relay = OutboxRelay(
                    shop.outbox,
                    refusing,
                    max_attempts=2,
                    backoff=FAST,
                    poll_interval=0.1,
                    meter_provider=meters,
                )
                stop = asyncio.Event()
                tasks = [
                    asyncio.create_task(relay.run(stop)),
                    asyncio.create_task(subscriber.run(billing.process, stop)),
                ]
                # A dead letter of each kind at the start and another three seconds
                # (three scrapes) later: a counter's first sample shows no increase to
                # rate(), so the two must not fall between the same two scrapes (placed
                # 50 orders in, the second one was too close: the panel showed 0 once).
                total = await shop.place("undeliverable-1") + await shop.place("poison-1")
                start = time.monotonic()
                n = 0
                second = False
                while time.monotonic() < start + 6:  # several scrapes while it runs
                    total += await shop.place(f"o-{n}", items=1)
                    n += 1
                    if not second and time.monotonic() >= start + 3:
                        total += await shop.place("undeliverable-2") + await shop.place("poison-2")
                        second = True
                    await asyncio.sleep(0.02)
                assert second
                assert n > 50
                published = total - 2  # not the undeliverable ones
                handled = published - 2  # nor the poison ones
                await billing.wait_for(handled)
                # One message delivered a second time: the inbox skips it.
                duplicate = await shop.outbox.get(billing.handled_ids[0])
                assert duplicate is not None
                await publisher.publish(duplicate)
                await until(lambda: billing.outcomes["duplicate"] == 1)
                await until(lambda: (relay.lag or 0) > 0)  # the dead letter ages
                stop.set()
                await asyncio.gather(*tasks)
            ended = time.time()
            prom.wait_for_scrapes(3)
            prom.wait_for_scrape_after(ended)
            yield Run(prom, published, handled, 1)
    finally:
        telemetry.shutdown()


def value(prom: PrometheusServer, expr: str) -> float:
    result = prom.query(expr)
    assert len(result) == 1, (expr, result)
    return float(result[0]["value"][1])


@pytest.mark.timeout(240)
def test_every_messaging_panel_shows_what_the_run_did(run: Run) -> None:
    results = evaluate_dashboard(run.prom, DASHBOARD, variables={"job": JOB})
    dashboard_targets = [
        t for p in iter_panels(json.loads(DASHBOARD.read_text())) for t in p["targets"]
    ]
    assert len(results) == len(dashboard_targets) >= 12
    for query, result in results.items():
        values = sample_values(result)
        assert values, (query.panel, query.promql)
        assert any(math.isfinite(v) and v > 0 for v in values), (query.panel, query.promql, result)
    job = f'job="{JOB}"'
    assert value(run.prom, f"sum(messaging_client_sent_messages_total{{{job}}})") == run.published
    handled = f'sum(messaging_client_consumed_messages_total{{{job}, cqrs_outcome="handled"}})'
    assert value(run.prom, handled) == run.handled
    duplicate = f'sum(messaging_client_consumed_messages_total{{{job}, cqrs_outcome="duplicate"}})'
    assert value(run.prom, duplicate) == run.duplicates
    assert value(run.prom, f"sum(cqrs_outbox_dead_lettered_total{{{job}}})") == 2
    assert value(run.prom, f"sum(cqrs_consumer_dead_lettered_total{{{job}}})") == 2
    assert value(run.prom, f"max(cqrs_outbox_lag_seconds{{{job}}})") > 0
    count = f"sum(messaging_client_operation_duration_seconds_count{{{job}}})"
    assert value(run.prom, count) == run.published
