"""``cqrs-ddd relay``: carry a database's outbox to RabbitMQ until stopped.

::

    cqrs-ddd relay --database-url postgresql://app@db/app --broker-url amqp://guest:guest@mq/

Wakes on commit (PostgreSQL ``LISTEN``; SQLite polls every ``--poll-interval``),
publishes each stream in order with publisher confirms, retries with backoff
and turns a message into a dead letter after ``--max-attempts`` (see
``cqrs-ddd outbox``). Run as many as you like on one PostgreSQL database.
Stops cleanly on SIGINT or SIGTERM (exit 0); exit 1 when the database or the
broker cannot be reached at start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from datetime import timedelta
from typing import Any

__all__ = ["add_parser", "run"]

SERVICE_NAME = "cqrs-ddd-relay"


def add_parser(commands: Any, database_url: Any, seconds: Any, count: Any) -> None:
    """Register ``relay`` on the ``commands`` sub-parsers (types from ``cli.main``)."""
    relay = commands.add_parser(
        "relay",
        help="publish the outbox to RabbitMQ, stream by stream, until stopped",
        description=(
            "Claim committed outbox messages in batches and publish them to RabbitMQ with "
            "publisher confirms, one aggregate's messages in version order. Several relays "
            "may run on one PostgreSQL database."
        ),
    )
    relay.add_argument("--database-url", type=database_url, required=True, metavar="URL")
    relay.add_argument(
        "--broker-url", required=True, metavar="URL", help="amqp://user:password@host:port/vhost"
    )
    relay.add_argument("--exchange", default="cqrs.events", help="topic exchange (%(default)s)")
    relay.add_argument("--batch-size", type=count(1), default=200, metavar="N")
    relay.add_argument(
        "--max-attempts",
        type=count(1),
        default=10,
        metavar="N",
        help="failed publishes before a message becomes a dead letter (default: %(default)s)",
    )
    relay.add_argument(
        "--poll-interval",
        type=seconds,
        default=1.0,
        metavar="SECONDS",
        help="look at the outbox this often when no commit woke the relay (%(default)s)",
    )
    relay.add_argument(
        "--claim-timeout",
        type=seconds,
        default=30.0,
        metavar="SECONDS",
        help="how long a claimed batch is hidden from other relays; a relay that dies "
        "holds its batch this long (default: %(default)s)",
    )
    relay.add_argument(
        "--backoff-max",
        type=seconds,
        default=300.0,
        metavar="SECONDS",
        help="longest wait before retrying a failed publish (doubling from 1 s; "
        "default: %(default)s)",
    )
    relay.add_argument(
        "--metrics-port",
        type=count(0, 65535),
        default=None,
        metavar="PORT",
        help="serve Prometheus metrics (lag, publish rate and duration) on this port",
    )
    relay.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error", "critical"),
        default="info",
    )
    relay.add_argument("--connect-timeout", type=seconds, default=10.0, metavar="SECONDS")
    relay.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the relay until SIGINT/SIGTERM; returns the exit code."""
    from cqrs_ddd_advanced_core.cli.telemetry import configure_logging

    if args.claim_timeout <= 0:
        print("cqrs-ddd relay: error: --claim-timeout must be above 0", file=sys.stderr)
        return 2
    configure_logging(args.log_level)
    try:
        return asyncio.run(_relay(args))
    except _StartError as exc:
        print(f"cqrs-ddd relay: error: {exc}", file=sys.stderr)
        return 1


class _StartError(Exception):
    pass


async def _relay(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry

    from cqrs_ddd_advanced_core.adapters.rabbitmq import RabbitMQPublisher
    from cqrs_ddd_advanced_core.cli.database import DatabaseError, open_database
    from cqrs_ddd_advanced_core.domain.exceptions import PublishError
    from cqrs_ddd_advanced_core.messaging import OutboxRelay
    from cqrs_ddd_advanced_core.outbox import Backoff
    from cqrs_ddd_core.adapters.sqlalchemy import OutboxListener, SQLAlchemyOutboxStore
    from cqrs_ddd_core.telemetry.setup import setup_telemetry

    telemetry = None
    if args.metrics_port is not None:
        try:
            telemetry = setup_telemetry(
                SERVICE_NAME,
                traces=False,
                prometheus_port=args.metrics_port,
                prometheus_registry=CollectorRegistry(),
                set_global=False,
            )
        except OSError as exc:
            raise _StartError(f"cannot serve metrics on port {args.metrics_port}: {exc}") from exc
    try:
        engine = await open_database(
            args.database_url, fresh=False, pool_size=4, connect_timeout=args.connect_timeout
        )
    except DatabaseError as exc:
        raise _StartError(str(exc)) from exc
    publisher = RabbitMQPublisher(
        args.broker_url, exchange=args.exchange, connect_timeout=args.connect_timeout
    )
    try:
        try:
            await publisher.__aenter__()
        except PublishError as exc:
            raise _StartError(str(exc)) from exc
        initial = min(1.0, args.backoff_max) or 0.001
        relay = OutboxRelay(
            SQLAlchemyOutboxStore(engine, claim_timeout=timedelta(seconds=args.claim_timeout)),
            publisher,
            backoff=Backoff(
                initial=timedelta(seconds=initial),
                maximum=timedelta(seconds=max(args.backoff_max, initial)),
            ),
            batch_size=args.batch_size,
            max_attempts=args.max_attempts,
            poll_interval=args.poll_interval,
            listener=OutboxListener(engine),
            meter_provider=None if telemetry is None else telemetry.meter_provider,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        if telemetry is not None and telemetry.prometheus_address is not None:
            host, port = telemetry.prometheus_address
            print(f"cqrs-ddd relay: metrics on http://{host}:{port}/metrics", file=sys.stderr)
        print("cqrs-ddd relay: running (Ctrl-C to stop)", file=sys.stderr, flush=True)
        await relay.run(stop)
        return 0
    finally:
        await publisher.close()
        await engine.dispose()
        if telemetry is not None:
            with contextlib.suppress(Exception):
                telemetry.shutdown()
