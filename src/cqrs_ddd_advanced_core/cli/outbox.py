"""``cqrs-ddd outbox``: look at dead letters and send them again.

::

    cqrs-ddd outbox dead-letters --database-url URL [--limit N] [--json]
    cqrs-ddd outbox requeue --database-url URL (--all | MESSAGE_ID ...)

A dead letter is an outbox message the relay gave up on after its configured
number of attempts; it stays in the outbox, and the later messages of its
stream wait behind it. ``requeue`` makes it pending again (attempts reset):
the next relay batch publishes it, then the ones behind it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(commands: Any, database_url: Any, count: Any) -> None:
    """Register ``outbox`` (with ``dead-letters`` and ``requeue``) on ``commands``."""
    outbox = commands.add_parser("outbox", help="list and requeue the outbox's dead letters")
    actions = outbox.add_subparsers(dest="outbox_command", metavar="ACTION", required=True)
    listing = actions.add_parser("dead-letters", help="list dead letters, oldest first")
    listing.add_argument("--database-url", type=database_url, required=True, metavar="URL")
    listing.add_argument("--limit", type=count(1), default=100, metavar="N")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(run=run)
    requeue = actions.add_parser("requeue", help="make dead letters pending again")
    requeue.add_argument("--database-url", type=database_url, required=True, metavar="URL")
    which = requeue.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every dead letter")
    which.add_argument("message_ids", nargs="*", default=[], metavar="MESSAGE_ID")
    requeue.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``outbox dead-letters`` or ``outbox requeue``; returns the exit code."""
    from cqrs_ddd_advanced_core.cli.database import DatabaseError

    if args.outbox_command == "requeue" and not args.all and not args.message_ids:
        print("cqrs-ddd outbox requeue: error: name message ids or --all", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args))
    except DatabaseError as exc:
        print(f"cqrs-ddd outbox: error: {exc}", file=sys.stderr)
        return 1


async def _run(args: argparse.Namespace) -> int:
    from cqrs_ddd_advanced_core.cli.database import open_database
    from cqrs_ddd_core.adapters.sqlalchemy import SQLAlchemyOutboxStore

    engine = await open_database(args.database_url, fresh=False, pool_size=1)
    try:
        store = SQLAlchemyOutboxStore(engine)
        if args.outbox_command == "requeue":
            count = await store.requeue(None if args.all else args.message_ids)
            print(f"requeued {count} dead letter{'s' if count != 1 else ''}")
            return 0
        dead = await store.dead_letters(limit=args.limit)
        for message in dead:
            if args.json:
                print(json.dumps(_as_dict(message), sort_keys=True))
            else:
                stream = f"{message.aggregate_type}:{message.aggregate_id}"
                print(
                    f"{message.message_id}  {message.message_type}  {stream}  "
                    f"attempts={message.attempts}  {message.last_error or ''}"
                )
        if not args.json:
            print(f"{len(dead)} dead letter{'s' if len(dead) != 1 else ''}", file=sys.stderr)
        return 0
    finally:
        await engine.dispose()


def _as_dict(message: Any) -> dict[str, Any]:
    return {
        "message_id": message.message_id,
        "message_type": message.message_type,
        "aggregate_type": message.aggregate_type,
        "aggregate_id": message.aggregate_id,
        "aggregate_version": message.aggregate_version,
        "schema_version": message.schema_version,
        "attempts": message.attempts,
        "last_error": message.last_error,
        "created_at": message.created_at.isoformat(),
    }
