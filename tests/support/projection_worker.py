"""A projection runner process for the SIGKILL proof.

Run as ``python -m tests.support.projection_worker URL [BATCH_SIZE]``.

It runs the shared ``account_totals`` SQL projection live until killed, and
prints ``started`` once its engine exists (the test kills it after that).
"""

from __future__ import annotations

import asyncio
import sys

from cqrs_ddd_advanced_core.projections import ProjectionRunner
from cqrs_ddd_core.adapters.sqlalchemy import (
    SQLAlchemyEventStore,
    SQLAlchemyProjectionStore,
    create_engine,
)
from tests.support.projections import sql_projection


async def main(url: str, batch_size: int) -> None:
    engine = create_engine(url)
    runner = ProjectionRunner(
        sql_projection(),
        events=SQLAlchemyEventStore(engine),
        store=SQLAlchemyProjectionStore(engine, standby_interval=0.05),
        batch_size=batch_size,
        poll_interval=0.05,
    )
    print("started", flush=True)
    await runner.run(asyncio.Event(), retry_delay=0.1)  # until SIGKILLed


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 100))
