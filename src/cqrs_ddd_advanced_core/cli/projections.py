"""``cqrs-ddd projections status|rebuild``: where projections stand, and rebuilding one.

``status [NAME]`` lists each projection's checkpoint, the events' head and
the lag between them (no projection code needed: the checkpoints are rows).
``rebuild NAME`` clears the projection's read model and applies every event
again, in batches that each commit with the checkpoint. It first takes the
projection's session: on PostgreSQL the advisory lock that one live runner
holds, so stop the live runners (or let ``--wait`` run out) first.

The projection's code comes from ``--projection module:attribute`` (a
``Projection``, or a callable without arguments returning one); the demo's
``customer_orders`` is known by name.

Exit codes: 0 done; 1 the database is unreachable, the projection is
unknown, or another runner held it for longer than ``--wait``; 2 bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
from typing import Any

from cqrs_ddd_advanced_core.cli.database import DEFAULT_DATABASE, DatabaseError, redact

__all__ = ["add_projections_parser", "run_projections"]

EXIT_OK = 0
EXIT_FAILED = 1

_KNOWN = {"customer_orders": "cqrs_ddd_advanced_core.demo.read_model:customer_orders_projection"}


class ProjectionCommandError(Exception):
    """The command cannot go on; the message is one line for the user."""


def add_projections_parser(commands: Any, database_url: Any, seconds: Any) -> None:
    """Add ``projections`` to the ``cqrs-ddd`` sub-commands.

    Args:
        commands: The sub-parsers action of the main parser.
        database_url: The argument type checking a database URL.
        seconds: The argument type of a duration in seconds.
    """
    projections = commands.add_parser(
        "projections",
        help="projection checkpoints and lag, or rebuild a projection from the events",
        description="Where each projection stands, or rebuild one from the first event.",
    )
    actions = projections.add_subparsers(dest="action", metavar="ACTION", required=True)
    status = actions.add_parser("status", help="checkpoint, head and lag of each projection")
    status.add_argument("name", nargs="?", help="only this projection")
    status.add_argument("--json", action="store_true", help="print JSON")
    rebuild = actions.add_parser("rebuild", help="clear a read model and apply every event again")
    rebuild.add_argument("name", help="the projection to rebuild")
    rebuild.add_argument(
        "--projection",
        metavar="MODULE:ATTRIBUTE",
        help="where its code is (a Projection, or a function returning one)",
    )
    rebuild.add_argument(
        "--wait",
        type=seconds,
        default=30.0,
        metavar="SECONDS",
        help="give up if another runner holds the projection this long (default: %(default)s)",
    )
    rebuild.add_argument("--batch-size", type=int, default=500, metavar="N")
    for action in (status, rebuild):
        action.add_argument(
            "--database-url",
            type=database_url,
            default=f"sqlite:///{DEFAULT_DATABASE.as_posix()}",
            metavar="URL",
            help="sqlite:///path.db or postgresql://... (default: the demo's database)",
        )


def run_projections(args: argparse.Namespace) -> int:
    """Run ``projections status|rebuild``; returns the exit code."""
    try:
        if args.action == "status":
            return asyncio.run(_status(args))
        return asyncio.run(_rebuild(args))
    except (ProjectionCommandError, DatabaseError) as exc:
        print(f"cqrs-ddd projections {args.action}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED


def load_projection(name: str, target: str | None) -> Any:
    """The ``Projection`` named ``name``, from ``target`` or the known ones.

    Raises:
        ProjectionCommandError: not found, not a projection, or another name.
    """
    from cqrs_ddd_advanced_core.projections import Projection

    spec = target or _KNOWN.get(name)
    if spec is None:
        raise ProjectionCommandError(
            f"no code is known for projection {name!r}: give --projection MODULE:ATTRIBUTE"
        )
    module_name, _, attribute = spec.partition(":")
    try:
        found: Any = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ProjectionCommandError(f"cannot load {spec!r}: {exc}") from exc
    projection = found if isinstance(found, Projection) else None
    if projection is None and callable(found):
        projection = found()
    if not isinstance(projection, Projection):
        raise ProjectionCommandError(f"{spec!r} is not a Projection (nor returns one)")
    if projection.name != name:
        raise ProjectionCommandError(f"{spec!r} is projection {projection.name!r}, not {name!r}")
    return projection


async def _open(url: str) -> Any:
    from cqrs_ddd_advanced_core.cli.database import open_database

    return await open_database(url, fresh=False, pool_size=5)


async def _status(args: argparse.Namespace) -> int:
    from cqrs_ddd_core.adapters.sqlalchemy import SQLAlchemyEventStore, SQLAlchemyProjectionStore

    engine = await _open(args.database_url)
    try:
        checkpoints = await SQLAlchemyProjectionStore(engine).checkpoints()
        head = await SQLAlchemyEventStore(engine).latest_position()
    finally:
        await engine.dispose()
    if args.name is not None:
        if args.name not in checkpoints:
            raise ProjectionCommandError(
                f"projection {args.name!r} has no checkpoint in {redact(args.database_url)}"
            )
        checkpoints = {args.name: checkpoints[args.name]}
    rows: list[dict[str, Any]] = [
        {"name": name, "checkpoint": position, "head": head, "lag": max(head - position, 0)}
        for name, position in sorted(checkpoints.items())
    ]
    if args.json:
        print(json.dumps({"head": head, "projections": rows}))
    elif not rows:
        print(f"no projection has a checkpoint yet (head: {head:,})")
    else:
        width = max(len(row["name"]) for row in rows)
        print(f"{'projection':<{width}}  checkpoint        head         lag")
        for row in rows:
            print(
                f"{row['name']:<{width}}  {row['checkpoint']:>10,}  {row['head']:>10,}"
                f"  {row['lag']:>10,}"
            )
    return EXIT_OK


async def _rebuild(args: argparse.Namespace) -> int:
    from cqrs_ddd_advanced_core.projections import ProjectionRunner
    from cqrs_ddd_core.adapters.sqlalchemy import SQLAlchemyEventStore, SQLAlchemyProjectionStore

    projection = load_projection(args.name, args.projection)
    engine = await _open(args.database_url)
    try:
        store = SQLAlchemyProjectionStore(engine)
        runner = ProjectionRunner(
            projection,
            events=SQLAlchemyEventStore(engine),
            store=store,
            batch_size=max(1, args.batch_size),
        )
        async with store.session(args.name) as session:
            try:
                await asyncio.wait_for(session.acquire(), args.wait)
            except TimeoutError:
                raise ProjectionCommandError(
                    f"another runner held projection {args.name!r} for {args.wait:g} s; "
                    "stop it first"
                ) from None
            applied = await runner.rebuild()
            status = await runner.status()
    finally:
        await engine.dispose()
    print(
        f"rebuilt {args.name}: {applied:,} events replayed, checkpoint {status.checkpoint:,} "
        f"of {status.head:,}"
    )
    return EXIT_OK
