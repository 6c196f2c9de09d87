"""``cqrs-ddd demo``: the shop's workload on a real database, with a summary at the end.

The order of things: logging and telemetry (``/metrics`` is served from the
start), the database (tables created, counts taken), the workload with a
progress bar, the database checked again, the summary, then serving metrics
for ``--serve-after`` seconds (or until Ctrl-C with ``--keep-serving``).

Ctrl-C (or SIGTERM) during the workload cancels the commands in flight (their
units of work roll back; one already inside its commit lands whole, as a
transaction does), checks the database and prints the partial summary; the
exit code is then 128 + the signal number (130 for Ctrl-C). A second Ctrl-C
stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from cqrs_ddd_advanced_core.cli.database import (
    DatabaseError,
    Engine,
    check_integrity,
    count_rows,
    dialect_of,
    open_database,
    redact,
)
from cqrs_ddd_advanced_core.cli.report import finalise, print_json, print_table
from cqrs_ddd_advanced_core.cli.sagas import attach_order_process, finish_order_process
from cqrs_ddd_advanced_core.cli.telemetry import DemoTelemetry, start_telemetry
from cqrs_ddd_advanced_core.demo.app import Shop
from cqrs_ddd_advanced_core.demo.domain import EVENT_SOURCED_TYPES, UserPreferences
from cqrs_ddd_advanced_core.demo.stats import RunStats
from cqrs_ddd_advanced_core.demo.workload import UnitOfWorkCapture, Workload

__all__ = ["DemoOptions", "run_demo"]

EXIT_OK, EXIT_FAILED = 0, 1


@dataclass(frozen=True)
class DemoOptions:
    """What ``cqrs-ddd demo`` was asked to do (its parsed command line)."""

    commands: int | None  # None: as many as ``duration`` allows
    concurrency: int
    database_url: str
    fresh_database: bool
    metrics_port: int | None
    serve_after: float
    keep_serving: bool
    json: bool
    progress: bool
    seed: int | None
    query_ratio: float
    sqlite_synchronous: str
    connect_timeout: float
    duration: float | None = None
    rate: float | None = None
    payment_failures: float | None = None  # the order process (sagas) with this ratio
    broker_url: str | None = None  # with it: the relay and billing run too (demo_messaging)
    billing_database_url: str | None = None


class DemoFailure(Exception):
    """A one-line reason to stop with exit code 1."""


class _Signals:
    """SIGINT/SIGTERM: the first calls ``on_signal``, a second stops at once."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._on_signal: Callable[[], None] = lambda: None
        self._loop = asyncio.get_running_loop()

    def on_signal(self, callback: Callable[[], None]) -> None:
        self._on_signal = callback

    def _handle(self, signum: int) -> None:
        if self.received is not None:  # the second one: stop without cleaning up
            self.restore()
            signal.raise_signal(signum)
            return
        self.received = signum
        self._on_signal()

    def __enter__(self) -> _Signals:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._loop.add_signal_handler(signum, self._handle, signum)
        return self

    def restore(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._loop.remove_signal_handler(signum)

    def __exit__(self, *_: object) -> None:
        self.restore()


@contextlib.contextmanager
def _progress(
    options: DemoOptions, console: Console
) -> Iterator[Callable[[RunStats], None] | None]:
    if not (options.progress and console.is_terminal):
        yield None
        return
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]:>7} cmd/s  {task.fields[failed]} failed"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("commands", total=options.commands, rate="-", failed=0)
        started = time.perf_counter()
        last = 0.0

        def update(stats: RunStats) -> None:
            nonlocal last
            now = time.perf_counter()
            if now - last < 0.1 and stats.commands < (options.commands or sys.maxsize):
                return
            last = now
            rate = stats.commands / (now - started) if now > started else 0.0
            progress.update(
                task,
                completed=stats.commands,
                rate=f"{rate:,.0f}",
                failed=stats.commands - stats.succeeded,
            )

        yield update


def _figures(stats: RunStats) -> dict[str, Any]:
    """``events stored`` and ``outbox enqueued``: the summary lines of the dashboard's
    totals of the same names (``cqrs.events.stored``, ``cqrs.outbox.enqueued``)."""
    events = dict(sorted(stats.events_stored.items()))
    outbox = dict(sorted(stats.outbox_enqueued.items()))
    return {
        "events": {"total": sum(events.values()), "by_aggregate_type": events},
        "outbox": {"total": sum(outbox.values()), "by_aggregate_type": outbox},
    }


_RESTOP_EVERY = 1.0  # seconds between cancellations of senders that go on after a stop


def _stop_until_done(workload: Workload, running: asyncio.Future[Any]) -> None:
    """Cancel the senders now, and again every second until the run has ended.

    One cancellation is enough when every layer passes it on; a layer that
    waits for a commit's outcome hands it back later, and one that lost it
    would otherwise let its sender go on through all the commands asked for
    (a wait without bound after Ctrl-C). Cancelling a finished sender is a no-op.
    """
    workload.stop()
    loop = asyncio.get_running_loop()

    def again() -> None:
        if not running.done():
            workload.stop()
            loop.call_later(_RESTOP_EVERY, again)

    loop.call_later(_RESTOP_EVERY, again)


async def _check_database(
    engine: Engine, before: Any, figures: dict[str, Any], interrupted: bool
) -> dict[str, Any]:
    after = await count_rows(engine)
    delta = after - before
    integrity = await check_integrity(
        engine,
        event_sourced=[aggregate.type_name() for aggregate in EVENT_SOURCED_TYPES],
        state_stored=[UserPreferences.type_name()],
    )
    events = dict(sorted(delta.events.items()))
    outbox = dict(sorted(delta.outbox.items()))
    return {
        "events": sum(events.values()),
        "events_by_aggregate_type": events,
        "outbox": sum(outbox.values()),
        "outbox_by_aggregate_type": outbox,
        "audit": delta.audit,
        "events_match": events == figures["events"]["by_aggregate_type"],
        "outbox_match": outbox == figures["outbox"]["by_aggregate_type"],
        "integrity": integrity.as_dict(),
        "note": (
            "interrupted: a command cancelled inside its commit may have committed whole"
            if interrupted
            else ""
        ),
    }


async def _serve(options: DemoOptions, signals: _Signals, url: str, err: Console) -> None:
    if options.keep_serving:
        err.print(f"serving metrics on {url} until Ctrl-C")
        deadline = None
    elif options.serve_after > 0:
        err.print(f"serving metrics on {url} for {options.serve_after:g} s (Ctrl-C to stop)")
        deadline = time.monotonic() + options.serve_after
    else:
        return
    stop = asyncio.Event()
    signals.on_signal(stop.set)
    if signals.received is not None:
        return
    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout)


async def run_demo(options: DemoOptions) -> int:
    """Run the demo workload as ``options`` say, print the summary; returns the exit code."""
    out = Console(file=sys.stdout, highlight=False)
    err = Console(stderr=True, highlight=False)
    dialect = dialect_of(options.database_url)
    try:
        telemetry = start_telemetry(options.metrics_port)
    except OSError as exc:
        raise DemoFailure(
            f"cannot serve metrics on 127.0.0.1:{options.metrics_port}: {exc.strerror or exc}"
        ) from exc
    try:
        return await _run(options, dialect, telemetry, out, err)
    finally:
        telemetry.shutdown()


async def _run(
    options: DemoOptions, dialect: str, telemetry: DemoTelemetry, out: Console, err: Console
) -> int:
    metrics_url = None
    if telemetry.metrics_address is not None:
        host, port = telemetry.metrics_address
        metrics_url = f"http://{host}:{port}/metrics"
        if not options.json:
            err.print(f"metrics: {metrics_url}")
    try:
        engine = await open_database(
            options.database_url,
            fresh=options.fresh_database,
            pool_size=max(5, options.concurrency + 2),
            sqlite_synchronous=options.sqlite_synchronous,
            connect_timeout=options.connect_timeout,
        )
    except DatabaseError as exc:
        raise DemoFailure(str(exc)) from exc
    try:
        before = await count_rows(engine)
        summary, code = await _workload(options, engine, before, telemetry, err)
        summary = finalise(
            {
                "database": {
                    "dialect": dialect,
                    "url": redact(options.database_url),
                    "fresh": options.fresh_database,
                },
                "metrics_url": metrics_url,
                "traces_exported": telemetry.traces_exported,
                **summary,
            }
        )
        if options.json:
            print_json(summary, sys.stdout)
        else:
            print_table(summary, out)
            if "messaging" in summary:
                from cqrs_ddd_advanced_core.cli.demo_messaging import print_messaging

                print_messaging(summary, out)
        if code == EXIT_OK and metrics_url is not None:
            with _Signals() as signals:
                await _serve(options, signals, metrics_url, err)
        return code
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def _messaging(options: DemoOptions, engine: Engine) -> AsyncIterator[Any]:
    """With ``--broker-url``: the relay and billing beside the workload (else None).

    Their metrics go to the global meter provider, which serves the demo's.
    """
    if options.broker_url is None:
        yield None
        return
    from cqrs_ddd_advanced_core.cli.demo_messaging import messaging
    from cqrs_ddd_advanced_core.domain.exceptions import PublishError

    try:
        async with messaging(
            options.broker_url,
            engine,
            options.database_url,
            billing_url=options.billing_database_url,
            fresh=options.fresh_database,
        ) as run:
            yield run
    except (PublishError, DatabaseError) as exc:  # the broker or billing's database at start
        raise DemoFailure(str(exc)) from exc


async def _workload(
    options: DemoOptions, engine: Engine, before: Any, telemetry: DemoTelemetry, err: Console
) -> tuple[dict[str, Any], int]:
    from cqrs_ddd_advanced_core.cli.demo_read_model import ReadModelRun
    from cqrs_ddd_core.adapters.sqlalchemy import (
        SQLAlchemyAuditStore,
        SQLAlchemyEventStore,
        SQLAlchemyOutboxStore,
        SQLAlchemyStateRepository,
        SQLAlchemyUnitOfWork,
    )

    stats = RunStats()
    tap = telemetry.tap
    read_model = ReadModelRun(engine)  # a projection keeps orders per customer meanwhile
    await read_model.start()
    shop = Shop(
        uow_factory=UnitOfWorkCapture(SQLAlchemyUnitOfWork.factory(engine)),
        event_store=SQLAlchemyEventStore(engine),
        outbox_store=SQLAlchemyOutboxStore(engine),
        preferences=SQLAlchemyStateRepository(UserPreferences, engine),
        audit_store=SQLAlchemyAuditStore(engine),
    )
    process = None
    if options.payment_failures is not None:  # every confirmed order starts a saga
        process = attach_order_process(shop, engine, payment_failure_ratio=options.payment_failures)
    async with _messaging(options, engine) as messaging_run:
        with _progress(options, err) as on_command:
            workload = Workload(
                shop,
                commands=options.commands,
                concurrency=options.concurrency,
                duration=options.duration,
                rate=options.rate,
                seed=options.seed,
                query_ratio=options.query_ratio,
                measure_dispatches=tap is None,
                stats=stats,
                on_command=on_command,
            )
            if tap is not None:
                tap.sink = stats.record_dispatch
            try:
                with _Signals() as signals:
                    signals.on_signal(lambda: _stop_until_done(workload, running))
                    running = asyncio.ensure_future(workload.run())
                    await running
            finally:
                if tap is not None:
                    tap.sink = None
        sagas = None if process is None else await finish_order_process(process)
        messaging_summary = None if messaging_run is None else await messaging_run.drain()
    figures = _figures(stats)
    check = await _check_database(engine, before, figures, stats.interrupted)
    check["read_model"] = await read_model.finish()
    summary = {**stats.as_dict(), **figures, "database_check": check}
    if sagas is not None:
        summary["sagas"] = sagas
    if messaging_summary is not None:
        summary["messaging"] = messaging_summary
        if not messaging_summary["ok"]:
            err.print("[bold red]messaging: not everything reached billing exactly once[/]")
            return summary, EXIT_FAILED
    if not check["integrity"]["ok"]:
        err.print("[bold red]the database check failed: something was half written[/]")
        return summary, EXIT_FAILED
    if signals.received is not None and stats.interrupted:
        name = signal.Signals(signals.received).name
        err.print(
            f"[bold]{name}[/]: stopped after {stats.commands:,}"
            + (f" of {options.commands:,}" if options.commands else "")
            + " commands"
        )
        return summary, 128 + signals.received
    if not check["read_model"]["matches_events"]:
        err.print("[bold red]the read model does not match the events[/]")
        return summary, EXIT_FAILED
    if sagas is not None and not sagas["ok"]:
        err.print("[bold red]the order process left sagas unfinished or stock held[/]")
        return summary, EXIT_FAILED
    if not (check["events_match"] and check["outbox_match"]):
        err.print("[bold red]the database does not match what the workload committed[/]")
        return summary, EXIT_FAILED
    return summary, EXIT_OK
