"""``cqrs-ddd demo --broker-url``: the relay and a billing service beside the workload.

While the shop's workload runs, an :class:`~cqrs_ddd_advanced_core.messaging.OutboxRelay`
publishes its outbox to RabbitMQ and a second service, billing
(:mod:`cqrs_ddd_advanced_core.demo.billing`), consumes the order and invoice
events into its own database through its inbox. After the workload the run
drains (bounded), then the summary's ``messaging`` part says what was
published, consumed, skipped as duplicates and dead-lettered, checked against
both databases and the broker:

* every outbox row is published (none left, no dead letter);
* billing's ledger holds exactly the shop's order and invoice messages, each
  once, every order's in version order;
* the partition queues and the dead-letter queue are empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cqrs_ddd_advanced_core.cli.database import Engine, open_database, redact

__all__ = ["BILLED_TYPES", "MessagingRun", "messaging", "print_messaging"]

BILLED_TYPES = ("Order", "Invoice")
DRAIN_TIMEOUT = 120.0


class _CountingPublisher:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.confirmed = 0

    async def publish(self, message: Any) -> None:
        await self.inner.publish(message)
        self.confirmed += 1


@dataclass
class MessagingRun:
    """The relay and billing running beside the workload (see :func:`messaging`)."""

    broker_url: str
    shop_engine: Engine
    billing_engine: Engine
    billing_url: str
    relay: Any
    billing: Any
    publisher: _CountingPublisher
    topology: Any
    outbox: Any
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def drain(self) -> dict[str, Any]:
        """Wait (bounded) until everything committed was published and consumed; the summary."""
        start = time.monotonic()
        drained = False
        while time.monotonic() - start < DRAIN_TIMEOUT:
            if await self._drained():
                drained = True
                break
            if any(task.done() for task in self.tasks):  # the relay or billing died
                break
            await asyncio.sleep(0.1)
        self.stop.set()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        return await self._summary(drained, time.monotonic() - start)

    async def _ids(self, engine: Engine, sql: str) -> set[str]:
        async with engine.connect() as conn:
            return {row[0] for row in (await conn.exec_driver_sql(sql)).all()}

    async def _drained(self) -> bool:
        if await self.outbox.oldest_unpublished_at() is not None:
            return False
        shop = await self._shop_ids()
        return shop <= await self._ids(self.billing_engine, "SELECT message_id FROM billing_ledger")

    async def _shop_ids(self) -> set[str]:
        types = ", ".join(f"'{t}'" for t in BILLED_TYPES)
        return await self._ids(
            self.shop_engine, f"SELECT message_id FROM outbox WHERE aggregate_type IN ({types})"
        )

    async def _summary(self, drained: bool, drain_s: float) -> dict[str, Any]:
        from cqrs_ddd_advanced_core.adapters.rabbitmq import queue_depths

        shop = await self._shop_ids()
        ledger = await self._ids(self.billing_engine, "SELECT message_id FROM billing_ledger")
        dead = await self.outbox.dead_letters(limit=1000)
        unpublished = await self.outbox.oldest_unpublished_at() is not None
        queues = [*self.topology.queues, self.topology.dead_letter_queue]
        depths = await queue_depths(self.broker_url, queues)
        outcomes = self.billing.outcomes
        checks = {
            "all_published": not unpublished and not dead,
            "ledger_matches_outbox": shop == ledger,
            "in_version_order": self.billing.out_of_order == 0,
            "queues_empty": not any(depths.values()),
        }
        return {
            "broker": redact(self.broker_url),
            "billing_database": redact(self.billing_url),
            "drained": drained,
            "drain_s": round(drain_s, 3),
            "published": self.publisher.confirmed,
            "consumed": outcomes.get("handled", 0),
            "duplicates_skipped": outcomes.get("duplicate", 0),
            "ignored": outcomes.get("ignored", 0),
            "dead_letters": {
                "outbox": len(dead),
                "consumer": depths[self.topology.dead_letter_queue],
            },
            "billing_ledger_rows": len(ledger),
            "shop_billed_messages": len(shop),
            "out_of_order": self.billing.out_of_order,
            "queue_depths": depths,
            "checks": checks,
            "ok": drained and all(checks.values()),
        }


def _billing_url(shop_url: str, given: str | None) -> str:
    if given:
        return given
    scheme, _, rest = shop_url.partition("://")
    if scheme.startswith("sqlite"):
        path = Path(rest[1:] if rest.startswith("/") else rest)
        return f"{scheme}:///{path.with_name('billing.db').as_posix()}"
    return shop_url  # one PostgreSQL database, billing's tables beside the shop's


@contextlib.asynccontextmanager
async def messaging(
    broker_url: str,
    shop_engine: Engine,
    shop_url: str,
    *,
    billing_url: str | None,
    fresh: bool,
) -> AsyncIterator[MessagingRun]:
    """Start the relay and billing; stop them when the block ends.

    Raises:
        DatabaseError: billing's database cannot be opened.
        PublishError: the broker cannot be reached.
    """
    from cqrs_ddd_advanced_core.adapters.rabbitmq import (
        ConsumerTopology,
        RabbitMQPublisher,
        RabbitMQSubscriber,
    )
    from cqrs_ddd_advanced_core.demo.billing import BILLING_TABLES_SQL, BillingService
    from cqrs_ddd_advanced_core.messaging import OutboxRelay
    from cqrs_ddd_core.adapters.sqlalchemy import (
        OutboxListener,
        SQLAlchemyInboxStore,
        SQLAlchemyOutboxStore,
    )

    url = _billing_url(shop_url, billing_url)
    billing_engine = await open_database(url, fresh=fresh and url != shop_url, pool_size=4)
    try:
        async with billing_engine.begin() as conn:
            for statement in BILLING_TABLES_SQL:
                await conn.exec_driver_sql(statement)
        topology = ConsumerTopology("billing", partitions=4, bindings=("Order.*", "Invoice.*"))
        subscriber = RabbitMQSubscriber(broker_url, topology)
        publisher = RabbitMQPublisher(broker_url)
        await publisher.__aenter__()  # fails fast: unreachable broker
        try:
            await subscriber.declare()
            billing = BillingService(SQLAlchemyInboxStore(billing_engine))
            outbox = SQLAlchemyOutboxStore(shop_engine)
            counting = _CountingPublisher(publisher)
            relay = OutboxRelay(
                outbox,
                counting,
                listener=OutboxListener(shop_engine),
                poll_interval=0.5,
            )
            run = MessagingRun(
                broker_url, shop_engine, billing_engine, url, relay, billing, counting,
                topology, outbox,
            )  # fmt: skip
            run.tasks = [
                asyncio.create_task(relay.run(run.stop)),
                asyncio.create_task(subscriber.run(billing.process, run.stop)),
            ]
            try:
                yield run
            finally:
                run.stop.set()
                await asyncio.gather(*run.tasks, return_exceptions=True)
        finally:
            await publisher.close()
    finally:
        await billing_engine.dispose()


def print_messaging(summary: dict[str, Any], console: Any) -> None:
    """The messaging part of the summary, a few lines under the table."""
    m = summary["messaging"]
    mark = "[green]ok[/]" if m["ok"] else "[bold red]FAILED[/]"
    console.print(
        f"messaging ({m['broker']}, billing in {m['billing_database']}): {mark}\n"
        f"  published {m['published']:,}; billing consumed {m['consumed']:,}, "
        f"skipped {m['duplicates_skipped']:,} duplicates; dead letters: "
        f"outbox {m['dead_letters']['outbox']}, billing {m['dead_letters']['consumer']}; "
        f"drained in {m['drain_s']:.2f} s\n"
        f"  checks: " + ", ".join(f"{k}={'yes' if v else 'NO'}" for k, v in m["checks"].items())
    )
