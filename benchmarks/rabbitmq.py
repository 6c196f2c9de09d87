"""A RabbitMQ broker for the suite: ``CQRS_BENCH_RABBITMQ_URL`` or a throwaway node.

Without the variable the suite starts the test suite's throwaway node
(``tests/support/rabbitmq.py``: Debian's ``rabbitmq-server`` on 127.0.0.1 and
free ports), and stops it afterwards.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

__all__ = ["ENV_URL", "broker"]

ENV_URL = "CQRS_BENCH_RABBITMQ_URL"


@asynccontextmanager
async def broker() -> AsyncIterator[tuple[str, str]]:
    """``(amqp url, where)``; raises ``RuntimeError`` if no broker can be had."""
    url = os.environ.get(ENV_URL)
    if url:
        yield url, ENV_URL
        return
    try:
        from tests.support.rabbitmq import SERVER, RabbitMQServer
    except ImportError as exc:  # pytest (which it imports) or the repository is missing
        raise RuntimeError(f"set {ENV_URL}, or run from the repository: {exc}") from exc
    if not SERVER.is_file():
        raise RuntimeError(f"RabbitMQ is not installed ({SERVER}) and {ENV_URL} is unset")
    server = await asyncio.to_thread(lambda: RabbitMQServer().start())
    try:
        yield server.url, "throwaway node (rabbitmq-server, loopback)"
    finally:
        await asyncio.to_thread(server.stop)
