"""A RabbitMQ broker for the suite: ``CQRS_BENCH_RABBITMQ_URL`` or a throwaway node.

Without the variable the suite starts the test suite's throwaway node
(``tests/support/rabbitmq.py``: Debian's ``rabbitmq-server`` on 127.0.0.1 and
free ports), and stops it afterwards. ``config``, ``plugins`` and ``erl_args``
start it with other settings (``benchmarks/broker_cpu.py`` compares them); a
broker from the variable cannot take them. ``CQRS_BENCH_RABBITMQ_ERL_ARGS``
gives the node Erlang flags for a whole suite run (for example ``+S 1:1``, one
scheduler, see the messaging tutorial, "The RabbitMQ node"); the workloads
report them with the broker.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

__all__ = ["ENV_ERL_ARGS", "ENV_URL", "broker"]

ENV_URL = "CQRS_BENCH_RABBITMQ_URL"
ENV_ERL_ARGS = "CQRS_BENCH_RABBITMQ_ERL_ARGS"


@asynccontextmanager
async def broker(
    *, config: str = "", plugins: tuple[str, ...] = (), erl_args: str = ""
) -> AsyncIterator[tuple[str, str]]:
    """``(amqp url, where)``; raises ``RuntimeError`` if no broker can be had.

    Args:
        config: ``rabbitmq.conf`` lines for the throwaway node.
        plugins: Plugins it enables (none by default).
        erl_args: Extra Erlang VM flags (``RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS``);
            ``CQRS_BENCH_RABBITMQ_ERL_ARGS`` when not given.
    """
    url = os.environ.get(ENV_URL)
    erl_args = erl_args or os.environ.get(ENV_ERL_ARGS, "")
    settings = bool(config or plugins or erl_args)
    if url and settings:
        raise RuntimeError(f"{ENV_URL} is set: node settings cannot be applied to that broker")
    if url:
        yield url, ENV_URL
        return
    try:
        from tests.support.rabbitmq import SERVER, RabbitMQServer
    except ImportError as exc:  # pytest (which it imports) or the repository is missing
        raise RuntimeError(f"set {ENV_URL}, or run from the repository: {exc}") from exc
    if not SERVER.is_file():
        raise RuntimeError(f"RabbitMQ is not installed ({SERVER}) and {ENV_URL} is unset")
    node = RabbitMQServer(config=config, plugins=plugins, erl_args=erl_args)
    server = await asyncio.to_thread(node.start)
    try:
        where = "throwaway node (rabbitmq-server, loopback)"
        given = {"rabbitmq.conf": config.strip(), "plugins": ",".join(plugins), "erl": erl_args}
        if settings:
            where += "; " + "; ".join(f"{k}: {v}" for k, v in given.items() if v)
        yield server.url, where
    finally:
        await asyncio.to_thread(server.stop)
