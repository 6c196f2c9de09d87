"""The ``cqrs-ddd`` console script.

``cqrs-ddd demo`` runs the shop's workload (:mod:`cqrs_ddd_advanced_core.demo`)
through an ``EventSourcedMediator`` on a real database and prints a summary.
See ``cqrs-ddd demo --help`` and ``docs/demo.md``. ``cqrs-ddd sagas`` lists,
inspects and resumes stored sagas (:mod:`cqrs_ddd_advanced_core.cli.sagas`).

Exit codes: 0 done; 1 the database is unreachable, the metrics port is taken,
or the database check failed; 2 bad arguments; 128 + signal number when
interrupted (130 for Ctrl-C).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from cqrs_ddd_advanced_core.cli import outbox as outbox_cli
from cqrs_ddd_advanced_core.cli import relay as relay_cli
from cqrs_ddd_advanced_core.cli.database import DEFAULT_DATABASE, dialect_of, redact
from cqrs_ddd_advanced_core.cli.projections import add_projections_parser, run_projections
from cqrs_ddd_advanced_core.cli.sagas import add_sagas_parser, run_sagas
from cqrs_ddd_core.version import __version__

__all__ = ["build_parser", "main"]

EXIT_USAGE = 2
DEFAULT_COMMANDS = 2000
"""Commands the demo sends when neither --commands nor --duration is given."""


def _bounded_int(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"{value} is out of range: must be {bound}")
        return value

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not a duration (seconds >= 0)")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"{text} must be above 0")
    return value


def _ratio(text: str) -> float:
    value = _seconds(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def _database_url(text: str) -> str:
    try:
        dialect_of(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (exit code 2), pointing at ``--help``."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``cqrs-ddd`` argument parser, with every command and option (the CLI reference)."""
    parser = _Parser(
        prog="cqrs-ddd", description="CQRS/DDD with event persistence as a pipeline middleware."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )
    demo = commands.add_parser(
        "demo",
        help="run the shop workload on SQLite (default) or PostgreSQL and print a summary",
        description=(
            "Send N commands (orders, invoices, user preferences) from C concurrent senders "
            "through an EventSourcedMediator (tracing, logging, metrics, validation, "
            "unit of work, event persistence, outbox, audit) on a real database, then "
            "print throughput, latencies, what was persisted and the errors."
        ),
        epilog=(
            "Traces go to an OpenTelemetry collector when OTEL_EXPORTER_OTLP_ENDPOINT is set "
            "(e.g. http://127.0.0.1:4318); the other OTEL_* variables are honoured."
        ),
    )
    demo.add_argument(
        "-n",
        "--commands",
        type=_bounded_int(1),
        default=None,
        metavar="N",
        help=f"commands to send (default: {DEFAULT_COMMANDS}, or no limit with --duration)",
    )
    demo.add_argument(
        "--duration",
        type=_positive_seconds,
        default=None,
        metavar="SECONDS",
        help="keep sending for this long (to feed dashboards; with -n, whichever ends first)",
    )
    demo.add_argument(
        "--rate",
        type=_positive_seconds,
        default=None,
        metavar="N",
        help="send at most N commands per second, all senders together (default: no limit)",
    )
    demo.add_argument(
        "-c",
        "--concurrency",
        type=_bounded_int(1, 1000),
        default=8,
        metavar="C",
        help="concurrent senders (default: %(default)s)",
    )
    demo.add_argument(
        "--database-url",
        type=_database_url,
        default=None,
        metavar="URL",
        help=(
            f"sqlite:///path.db or postgresql://user:password@host:port/db (default: a fresh "
            f"SQLite file, ./{DEFAULT_DATABASE.as_posix()}); the tables are created if missing"
        ),
    )
    demo.add_argument(
        "--metrics-port",
        type=_bounded_int(0, 65535),
        default=None,
        metavar="PORT",
        help="serve Prometheus metrics on http://127.0.0.1:PORT/metrics while running (0: any)",
    )
    serving = demo.add_mutually_exclusive_group()
    serving.add_argument(
        "--serve-after",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="with --metrics-port: keep serving this long after the workload",
    )
    serving.add_argument(
        "--keep-serving",
        action="store_true",
        help="with --metrics-port: keep serving after the workload until Ctrl-C",
    )
    demo.set_defaults(demo_parser=demo)
    demo.add_argument("--json", action="store_true", help="print the summary as JSON")
    demo.add_argument(
        "--no-progress", action="store_true", help="no progress bar (none when not a terminal)"
    )
    demo.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error", "critical"),
        default="warning",
        help="structlog output on stderr (default: %(default)s)",
    )
    demo.add_argument("--seed", type=int, default=None, help="seed the workload's choices")
    demo.add_argument(
        "--query-ratio",
        type=_ratio,
        default=0.3,
        metavar="R",
        help="chance of a query after each step (default: %(default)s)",
    )
    demo.add_argument(
        "--sqlite-synchronous",
        choices=("FULL", "NORMAL"),
        default="FULL",
        help="SQLite durability: FULL (default) or NORMAL (faster; WAL never corrupts)",
    )
    demo.add_argument(
        "--connect-timeout",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="give up on an unreachable database after this long (default: %(default)s)",
    )
    add_projections_parser(commands, _database_url, _seconds)
    demo.add_argument(
        "--order-process",
        type=_ratio,
        nargs="?",
        const=0.2,
        default=None,
        metavar="DECLINED",
        dest="payment_failures",
        help="run the order process saga for each confirmed order (reserve, pay, ship), "
        "declining this share of payments (default when given: 0.2)",
    )
    add_sagas_parser(commands, _database_url)
    relay_cli.add_parser(commands, _database_url, _seconds, _bounded_int)
    outbox_cli.add_parser(commands, _database_url, _bounded_int)
    demo.add_argument(
        "--broker-url",
        default=None,
        metavar="URL",
        help=(
            "amqp://...: also run the outbox relay to RabbitMQ and a billing service "
            "consuming the order and invoice events into its own database"
        ),
    )
    demo.add_argument(
        "--billing-database-url",
        type=_database_url,
        default=None,
        metavar="URL",
        help="with --broker-url: billing's database (default: billing.db beside the SQLite "
        "file, or the same PostgreSQL database)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "projections":
        return run_projections(args)
    if args.command == "sagas":
        return run_sagas(args)
    if getattr(args, "run", None) is not None:  # commands in modules of their own
        return int(args.run(args))
    if args.command != "demo":  # pragma: no cover - argparse refuses unknown commands
        parser.error(f"unknown command {args.command!r}")
    if (args.serve_after or args.keep_serving) and args.metrics_port is None:
        args.demo_parser.error("--serve-after and --keep-serving need --metrics-port")
    return _demo(args)


def _missing_extra(exc: ModuleNotFoundError) -> int:
    """One line naming what is missing and the extra that brings it (exit 1)."""
    missing = getattr(exc, "module", None) or exc.name or "a dependency"
    print(
        f"cqrs-ddd demo: error: it needs {missing}, which is not installed "
        "(hint: pip install 'cqrs-ddd-advanced-core[cli]')",
        file=sys.stderr,
    )
    return 1


def _demo(args: argparse.Namespace) -> int:
    # Imported here: `cqrs-ddd --help` stays fast and needs no database driver.
    # Without the [cli] extra the imports fail: one line, not a traceback.
    try:
        from cqrs_ddd_advanced_core.cli.demo import DemoFailure, DemoOptions, run_demo
        from cqrs_ddd_advanced_core.cli.telemetry import configure_logging
        from cqrs_ddd_advanced_core.demo.domain import OrderClosedError
        from cqrs_ddd_advanced_core.demo.sagas import PaymentDeclinedError
        from cqrs_ddd_core.exceptions import ConcurrencyError, ConfigurationError
        from cqrs_ddd_core.telemetry.api import error_type
    except ModuleNotFoundError as exc:
        if not _optional(exc):
            raise
        return _missing_extra(exc)

    expected = [
        error_type(ConcurrencyError("-", 0, 0)),
        error_type(OrderClosedError("-", "-", "-")),
        error_type(PaymentDeclinedError("-")),  # the order process's injected failures
        error_type(asyncio.CancelledError()),
    ]
    configure_logging(args.log_level, expected)
    fresh = args.database_url is None
    url = args.database_url or f"sqlite+aiosqlite:///{DEFAULT_DATABASE.as_posix()}"
    options = DemoOptions(
        commands=(
            args.commands
            if args.commands is not None
            else (None if args.duration is not None else DEFAULT_COMMANDS)
        ),
        duration=args.duration,
        rate=args.rate,
        concurrency=args.concurrency,
        database_url=url,
        fresh_database=fresh,
        metrics_port=args.metrics_port,
        serve_after=args.serve_after,
        keep_serving=args.keep_serving,
        json=args.json,
        progress=not args.no_progress,
        seed=args.seed,
        query_ratio=args.query_ratio,
        sqlite_synchronous=args.sqlite_synchronous,
        connect_timeout=args.connect_timeout,
        payment_failures=args.payment_failures,
        broker_url=args.broker_url,
        billing_database_url=args.billing_database_url,
    )
    import threading

    before = {t.ident for t in threading.enumerate() if t.ident is not None}
    try:
        return _exit_bounded(asyncio.run(run_demo(options)), before)
    except ModuleNotFoundError as exc:  # an extra's module imported on the way
        if not _optional(exc):
            raise
        return _missing_extra(exc)
    except (DemoFailure, ConfigurationError) as exc:
        print(f"cqrs-ddd demo: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a second Ctrl-C
        print(
            f"cqrs-ddd demo: interrupted ({redact(url)} is consistent: every commit is whole)",
            file=sys.stderr,
        )
        return _exit_bounded(130, before)


_EXIT_GRACE = 5.0  # seconds leftover driver threads get to end once the demo is done


def _exit_bounded(code: int, before: set[int]) -> int:
    """Return ``code``, or end the process with it if driver threads would keep it alive.

    A database connection that a cancelled command never handed back (Ctrl-C
    at the wrong moment) keeps its aiosqlite thread, which is not a daemon,
    running: the interpreter would wait for it at exit without bound. The
    database is consistent whatever happened (every commit is whole), so the
    threads the demo started (not in ``before``) get a short grace, then the
    process ends with its exit code.
    """
    import os
    import threading
    import time

    def leftovers() -> list[threading.Thread]:
        return [
            t
            for t in threading.enumerate()
            if t.ident not in before and not t.daemon and t.is_alive()
        ]

    deadline = time.monotonic() + _EXIT_GRACE
    for thread in leftovers():
        thread.join(max(0.0, deadline - time.monotonic()))
    if leftovers():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _optional(exc: ModuleNotFoundError) -> bool:
    from cqrs_ddd_core.extras import extra_for

    return exc.name is not None and extra_for(exc.name) is not None


if __name__ == "__main__":  # python -m cqrs_ddd_advanced_core.cli.main
    sys.exit(main())
