"""The process the SIGKILL proof kills: it runs order sagas on SQLite or PostgreSQL.

Usage: ``python -m tests.support.saga_crash_child DATABASE_URL N``

It first recovers what a previous (killed) run left open, prints ``ready``,
then hands ``OrderPlaced`` for orders 0..N-1 to the saga manager from a few
concurrent tasks (a saga already started is not started again, and carries
on from its last commit; those known already were recovered, or have ended),
recovers until no saga is open, and prints
``done``. Orders whose number is a multiple of 5 have their payment refused;
multiples of 7 (not of 5) cannot be shipped (so pay is refunded and stock
released).
"""

from __future__ import annotations

import asyncio
import logging
import sys

import structlog

from cqrs_ddd_advanced_core.sagas.state import OPEN_STATUSES
from cqrs_ddd_core.adapters.sqlalchemy import create_engine, create_tables
from tests.support.backends import sql_backend
from tests.support.orders import OrderPlaced, order_app, sync_saga

SENDERS = 4


def order_id(number: int) -> str:
    return f"o-{number:04d}"


def declined(number: int) -> bool:
    return number % 5 == 0


def unshippable(number: int) -> bool:
    return number % 7 == 0 and not declined(number)


async def main(url: str, total: int) -> None:
    engine = create_engine(url)
    try:
        await create_tables(engine)
        app = order_app(sql_backend(engine), sync_saga())
        app.declined.update(order_id(n) for n in range(total) if declined(n))
        app.unshippable.update(order_id(n) for n in range(total) if unshippable(n))
        await app.manager.recover(limit=total)
        print("ready", flush=True)
        known = {s.key for s in await app.manager.store.list_sagas(limit=total)}
        numbers = iter(n for n in range(total) if order_id(n) not in known)

        async def sender() -> None:
            for number in numbers:
                try:
                    await app.manager.handle(OrderPlaced(order_id=order_id(number)))
                except Exception as exc:  # lost races past the retries: recovered below
                    print(f"deferred {order_id(number)}: {type(exc).__name__}", flush=True)

        await asyncio.gather(*(sender() for _ in range(SENDERS)))
        while await app.manager.store.list_sagas(statuses=OPEN_STATUSES, limit=1):
            await app.manager.recover(limit=total)
        print("done", flush=True)
    finally:
        await engine.dispose()


if __name__ == "__main__":
    # An application's choice: no log lines (stdout carries the protocol; rendering
    # the refused payments' tracebacks would cost more than the sagas).
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
