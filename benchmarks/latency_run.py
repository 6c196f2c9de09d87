"""Workload 8's latency run alone: ``python -m benchmarks.latency_run --rate 500``.

Runs the commit-to-consumer latency run of ``benchmarks/workloads/messaging.py``
(the sender here, ``cqrs-ddd relay`` and ``benchmarks.latency_consumer`` in
processes of their own) ``--repeat`` times on one throwaway PostgreSQL cluster
and RabbitMQ node, and prints each run's figures as a JSON line: p50/p99 and
the CPU milliseconds per message of each process. Faster than the whole
workload when only the consumer side changed. The relay and the consumer
import the library from ``PYTHONPATH`` like this process.
"""

from __future__ import annotations

import argparse
import asyncio
import json


async def _main(args: argparse.Namespace) -> None:
    from benchmarks.logs import configure_filtered
    from benchmarks.persisted import build_persisted
    from benchmarks.pg import database
    from benchmarks.rabbitmq import broker
    from benchmarks.workloads.messaging import _analyze, _fill, _latency
    from cqrs_ddd_core.adapters.sqlalchemy import SQLAlchemyOutboxStore, create_engine

    configure_filtered()
    async with database() as db, broker() as (url, _where):
        engine = create_engine(db.url, pool_size=12, postgres_commit_linger=args.commit_linger)
        try:
            warm = build_persisted(engine, "warm")
            await _fill(warm, 400)
            store = SQLAlchemyOutboxStore(engine)  # published: the relay starts from none
            await store.mark_published([m.message_id for m in await store.claim_batch(400)])
            await _analyze(engine)
            for repeat in range(args.repeat):
                persisted = build_persisted(engine, f"lat{repeat}")
                result = await _latency(persisted, db.url, url, args.seconds, args.rate)
                print(json.dumps({"run": repeat + 1, **result}), flush=True)
        finally:
            await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.latency_run")
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--commit-linger", type=float, default=0.0, help="the sender's postgres_commit_linger"
    )
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
