"""``cqrs-ddd sagas``: list, inspect and resume the sagas stored in a database.

* ``cqrs-ddd sagas list --database-url URL [--type T] [--status S] [--json]``
* ``cqrs-ddd sagas inspect SAGA_ID --database-url URL``
* ``cqrs-ddd sagas resume (SAGA_ID... | --all) --database-url URL [--app MODULE:FACTORY]``

``list`` and ``inspect`` only read. ``resume`` needs the application (its
saga definitions and the handlers of their commands): ``--app`` names a
callable taking the ``AsyncEngine`` and returning a
:class:`~cqrs_ddd_advanced_core.sagas.SagaManager` (default: the demo's
order process). A failed saga retries its compensation; an open one carries
on from its last committed step; ``--all`` recovers every open saga not
waiting for an event.

Exit codes: 0 done; 1 the database is unreachable, a saga is not found, or
the app cannot be loaded; 2 bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from typing import TYPE_CHECKING, Any

from cqrs_ddd_advanced_core.cli.database import DatabaseError, open_database, redact
from cqrs_ddd_advanced_core.sagas.state import SagaStatus

if TYPE_CHECKING:
    from cqrs_ddd_advanced_core.demo.app import Shop
    from cqrs_ddd_advanced_core.demo.sagas import OrderProcess
    from cqrs_ddd_advanced_core.sagas.manager import SagaManager
    from cqrs_ddd_advanced_core.sagas.state import SagaState

__all__ = [
    "DEFAULT_APP",
    "add_sagas_parser",
    "attach_order_process",
    "demo_saga_manager",
    "finish_order_process",
    "run_sagas",
]

DEFAULT_APP = "cqrs_ddd_advanced_core.cli.sagas:demo_saga_manager"
"""The ``--app`` of ``resume`` when none is given: the demo's order process."""


def add_sagas_parser(commands: Any, database_url: Any) -> None:
    """Add ``sagas`` and its sub-commands to the ``cqrs-ddd`` sub-parsers.

    Args:
        commands: The console script's sub-parsers.
        database_url: The argparse type that checks a database URL.
    """
    sagas = commands.add_parser(
        "sagas",
        help="list, inspect and resume the sagas stored in a database",
        description="List, inspect and resume the sagas stored in a database.",
    )
    actions = sagas.add_subparsers(dest="saga_command", metavar="ACTION", required=True)

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--database-url",
            type=database_url,
            required=True,
            metavar="URL",
            help="sqlite:///path.db or postgresql://user:password@host:port/db",
        )

    listing = actions.add_parser("list", help="list sagas, oldest first")
    common(listing)
    listing.add_argument("--type", default=None, help="only sagas of this type")
    listing.add_argument(
        "--status",
        action="append",
        choices=[s.value for s in SagaStatus],
        default=None,
        help="only sagas with this status (repeatable)",
    )
    listing.add_argument("--limit", type=int, default=1000, help="at most this many")
    listing.add_argument("--json", action="store_true", help="print JSON lines")
    inspect = actions.add_parser("inspect", help="print one saga's stored state as JSON")
    common(inspect)
    inspect.add_argument("saga_id", metavar="SAGA_ID")
    resume = actions.add_parser("resume", help="carry on (or retry compensating) sagas")
    common(resume)
    resume.add_argument("saga_ids", nargs="*", metavar="SAGA_ID")
    resume.add_argument("--all", action="store_true", help="every open saga not waiting")
    resume.add_argument(
        "--app",
        default=DEFAULT_APP,
        metavar="MODULE:FACTORY",
        help="callable(engine) -> SagaManager (default: %(default)s)",
    )
    resume.set_defaults(resume_parser=resume)


def run_sagas(args: argparse.Namespace) -> int:
    """Run ``cqrs-ddd sagas ...``; returns the exit code."""
    if args.saga_command == "resume" and bool(args.saga_ids) == bool(args.all):
        args.resume_parser.error("give SAGA_ID... or --all (not both)")
    try:
        return asyncio.run(_run(args))
    except (DatabaseError, _Failure) as exc:
        print(f"cqrs-ddd sagas: error: {exc}", file=sys.stderr)
        return 1


class _Failure(Exception):
    """A one-line reason to exit with 1."""


async def _run(args: argparse.Namespace) -> int:
    from cqrs_ddd_advanced_core.adapters.sqlalchemy import SQLAlchemySagaStore

    engine = await open_database(args.database_url, fresh=False, pool_size=2)
    try:
        store = SQLAlchemySagaStore(engine)
        if args.saga_command == "list":
            statuses = None if args.status is None else [SagaStatus(s) for s in args.status]
            states = await store.list_sagas(
                saga_type=args.type, statuses=statuses, limit=args.limit
            )
            _print_list(states, as_json=args.json)
            return 0
        if args.saga_command == "inspect":
            state = await store.find(args.saga_id)
            if state is None:
                raise _Failure(f"no saga {args.saga_id!r} in {redact(args.database_url)}")
            print(state.model_dump_json(indent=2))
            return 0
        manager = _load_app(args.app, engine)
        if args.all:
            recovered = await manager.recover()
            print(f"recovered {recovered} saga(s)")
            return 0
        for saga_id in args.saga_ids:
            if await store.find(saga_id) is None:
                raise _Failure(f"no saga {saga_id!r} in {redact(args.database_url)}")
            state = await manager.resume(saga_id)
            print(f"{state.saga_id}: {state.status.value}")
        return 0
    finally:
        await engine.dispose()


def _load_app(path: str, engine: Any) -> SagaManager:
    from cqrs_ddd_advanced_core.sagas.manager import SagaManager

    module_name, _, attribute = path.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise _Failure(f"cannot load --app {path!r}: {exc}") from exc
    manager = factory(engine)
    if not isinstance(manager, SagaManager):
        raise _Failure(f"--app {path!r} returned {type(manager).__name__}, not a SagaManager")
    return manager


def _print_list(states: list[SagaState], *, as_json: bool) -> None:
    if as_json:
        for state in states:
            print(state.model_dump_json())
        return
    print(f"{'SAGA':<40} {'TYPE':<16} {'STATUS':<13} {'STEP':>4}  UPDATED")
    for s in states:
        print(
            f"{s.saga_id:<40} {s.saga_type:<16} {s.status.value:<13} {s.step:>4}  "
            f"{s.updated_at.isoformat(timespec='seconds')}" + (f"  {s.error}" if s.error else "")
        )
    print(f"{len(states)} saga(s)")


def attach_order_process(
    shop: Shop, engine: Any, *, payment_failure_ratio: float = 0.2
) -> OrderProcess:
    """The demo's order process on ``shop``, its sagas and aggregates in ``engine``."""
    from cqrs_ddd_advanced_core.adapters.sqlalchemy import SQLAlchemySagaStore
    from cqrs_ddd_advanced_core.demo.sagas import install_order_process
    from cqrs_ddd_core.adapters.sqlalchemy import SQLAlchemyStateRepository

    return install_order_process(
        shop,
        SQLAlchemySagaStore(engine),
        lambda aggregate: SQLAlchemyStateRepository(aggregate, engine),
        payment_failure_ratio=payment_failure_ratio,
    )


async def finish_order_process(process: OrderProcess) -> dict[str, Any]:
    """Recover the sagas a cancelled or conflicting run left mid-way, then summarise them."""
    from cqrs_ddd_advanced_core.demo.sagas import order_process_summary

    await process.manager.drain()
    await process.manager.recover()
    await process.manager.count_open()  # the cqrs.saga.open gauge, as the run leaves it
    return await order_process_summary(process)


def demo_saga_manager(engine: Any) -> SagaManager:
    """The default ``--app`` of ``resume``: the demo shop's order process on ``engine``."""
    from cqrs_ddd_advanced_core.demo.app import Shop
    from cqrs_ddd_advanced_core.demo.domain import UserPreferences
    from cqrs_ddd_core.adapters.sqlalchemy import (
        SQLAlchemyEventStore,
        SQLAlchemyOutboxStore,
        SQLAlchemyStateRepository,
        SQLAlchemyUnitOfWork,
    )

    shop = Shop(
        uow_factory=SQLAlchemyUnitOfWork.factory(engine),
        event_store=SQLAlchemyEventStore(engine),
        outbox_store=SQLAlchemyOutboxStore(engine),
        preferences=SQLAlchemyStateRepository(UserPreferences, engine),
    )
    return attach_order_process(shop, engine).manager
