"""The demo's read model: a projection runner beside the workload, then the check.

While the workload runs, a :class:`~cqrs_ddd_advanced_core.projections.ProjectionRunner`
keeps ``customer_orders`` (:mod:`cqrs_ddd_advanced_core.demo.read_model`) up
to date, live (PostgreSQL ``LISTEN``; polling on SQLite). When it is done the
runner catches up to the head and the read model is compared, customer by
customer, with the same figures folded straight from the events.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from typing import Any

from cqrs_ddd_advanced_core.demo.read_model import (
    CUSTOMER_ORDERS,
    create_read_model,
    customer_orders_projection,
    expected_totals,
    read_customer_totals,
)
from cqrs_ddd_advanced_core.projections import ProjectionRunner
from cqrs_ddd_core.persistence.records import StoredEvent

__all__ = ["ReadModelRun"]

_PAGE = 1000


class ReadModelRun:
    """The ``customer_orders`` runner of one demo run.

    Args:
        engine: The demo's ``AsyncEngine``.
    """

    def __init__(self, engine: Any) -> None:
        from cqrs_ddd_core.adapters.sqlalchemy import (
            SQLAlchemyEventStore,
            SQLAlchemyProjectionStore,
        )

        self._engine = engine
        self._events = SQLAlchemyEventStore(engine)
        self._store = SQLAlchemyProjectionStore(engine)
        self._runner = ProjectionRunner(
            customer_orders_projection(),
            events=self._events,
            store=self._store,
            poll_interval=0.2,
        )
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Create the read model's tables if missing and start following the events."""
        async with self._store.transaction() as tx:
            await create_read_model(tx)
        self._task = asyncio.ensure_future(self._runner.run(self._stop))

    async def finish(self) -> dict[str, Any]:
        """Stop following, catch up to the head, and check the read model.

        Returns:
            ``customers``, ``checkpoint``, ``head``, ``lag_at_end`` (events the
            live runner had not applied yet when the workload ended),
            ``catch_up_s`` and ``matches_events``.
        """
        self._stop.set()
        if self._task is not None:
            await self._task
        behind = (await self._runner.status()).lag
        started = time.perf_counter()
        await self._runner.catch_up()
        catch_up_s = time.perf_counter() - started
        status = await self._runner.status()
        stored = await read_customer_totals(self._engine)
        expected = expected_totals(await self._all_events(status.checkpoint))
        mismatched = sorted(
            customer
            for customer in stored.keys() | expected.keys()
            if stored.get(customer) != expected.get(customer)
        )
        return {
            "projection": CUSTOMER_ORDERS,
            "customers": len(stored),
            "checkpoint": status.checkpoint,
            "head": status.head,
            "lag_at_end": behind,
            "catch_up_s": catch_up_s,
            "matches_events": not mismatched and status.lag == 0,
            "mismatched": {
                customer: {
                    "read_model": asdict(stored[customer]) if customer in stored else None,
                    "events": asdict(expected[customer]) if customer in expected else None,
                }
                for customer in mismatched[:5]
            },
        }

    async def _all_events(self, until: int) -> list[StoredEvent]:
        found: list[StoredEvent] = []
        after = 0
        while after < until:
            page = await self._events.read_page(after_position=after, limit=_PAGE)
            if not page:
                break
            found.extend(event for event in page if event.position <= until)
            after = page[-1].position
        return found
