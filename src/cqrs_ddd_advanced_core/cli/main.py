"""The ``cqrs-ddd`` console script.

``cqrs-ddd demo`` runs the shop's workload (:mod:`cqrs_ddd_advanced_core.demo`)
through an ``EventSourcedMediator`` on a real database and prints a summary.
See ``cqrs-ddd demo --help`` and ``docs/demo.md``.

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

from cqrs_ddd_advanced_core.cli.database import DEFAULT_DATABASE, dialect_of, redact
from cqrs_ddd_core.version import __version__

__all__ = ["build_parser", "main"]

EXIT_USAGE = 2


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
        default=2000,
        metavar="N",
        help="commands to send (default: %(default)s)",
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "demo":  # pragma: no cover - argparse refuses unknown commands
        parser.error(f"unknown command {args.command!r}")
    if (args.serve_after or args.keep_serving) and args.metrics_port is None:
        args.demo_parser.error("--serve-after and --keep-serving need --metrics-port")
    return _demo(args)


def _demo(args: argparse.Namespace) -> int:
    # Imported here: `cqrs-ddd --help` stays fast and needs no database driver.
    from cqrs_ddd_advanced_core.cli.demo import DemoFailure, DemoOptions, run_demo
    from cqrs_ddd_advanced_core.cli.telemetry import configure_logging
    from cqrs_ddd_advanced_core.demo.domain import OrderClosedError
    from cqrs_ddd_core.exceptions import ConcurrencyError, ConfigurationError
    from cqrs_ddd_core.telemetry.api import error_type

    expected = [
        error_type(ConcurrencyError("-", 0, 0)),
        error_type(OrderClosedError("-", "-", "-")),
        error_type(asyncio.CancelledError()),
    ]
    configure_logging(args.log_level, expected)
    fresh = args.database_url is None
    url = args.database_url or f"sqlite+aiosqlite:///{DEFAULT_DATABASE.as_posix()}"
    options = DemoOptions(
        commands=args.commands,
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
    )
    try:
        return asyncio.run(run_demo(options))
    except (DemoFailure, ConfigurationError) as exc:
        print(f"cqrs-ddd demo: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a second Ctrl-C
        print(
            f"cqrs-ddd demo: interrupted ({redact(url)} is consistent: every commit is whole)",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":  # python -m cqrs_ddd_advanced_core.cli.main
    sys.exit(main())
