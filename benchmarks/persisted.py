"""Our persisted command: one event, one outbox row, one aggregate state row.

A state-stored aggregate registered as event-sourced too (the way the
library's docs show "state and stream commit together"): the handler creates
an ``Account``, which records ``AccountOpened``; the handler saves the state
through the state repository and returns the events. The pipeline is the
``EventSourcedMediator`` default (tracing -> logging -> metrics -> validation ->
unit_of_work -> event_persistence -> outbox -> handler), or the same list built
explicitly when telemetry providers are injected.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.latency import Latencies
from cqrs_ddd_core.cqrs import CommandResponse, HandlerRegistry
from cqrs_ddd_core.domain import AggregateRoot, Command, DomainEvent

__all__ = [
    "PERSISTENCE_SPANS_ENV",
    "Account",
    "AccountOpened",
    "OpenAccount",
    "Persisted",
    "build_persisted",
    "explicit_pipeline",
]


class AccountOpened(DomainEvent):
    owner: str
    balance: int


class Account(AggregateRoot):
    owner: str = ""
    balance: int = 0

    @classmethod
    def open(cls, account_id: str, owner: str, balance: int) -> Account:
        account = cls(id=account_id, owner=owner, balance=balance)
        account.record_event(AccountOpened(owner=owner, balance=balance))
        return account


class OpenAccount(Command[str]):
    account_id: str
    owner: str = "alice"
    balance: int = 100


PERSISTENCE_SPANS_ENV = "CQRS_BENCH_PERSISTENCE_SPANS"
"""``TracingMiddleware(persistence_spans=...)`` of the listed pipelines: ``steps``
(default), ``events``, ``commit`` or ``none``; read from the environment so that
every workload's process sees it."""


def persistence_spans() -> str:
    return os.environ.get(PERSISTENCE_SPANS_ENV) or "steps"


@dataclass
class Persisted:
    """A mediator wired to one database, and how to send ``n`` commands."""

    mediator: Any
    engine: Any
    prefix: str
    counter: itertools.count[int]

    def command(self) -> OpenAccount:
        return OpenAccount(account_id=f"{self.prefix}-{next(self.counter)}")

    def sender(self) -> Callable[[int], Awaitable[None]]:
        send = self.mediator.send
        make = self.command

        async def run(n: int) -> None:
            for _ in range(n):
                await send(make())

        return run

    def concurrent_sender(
        self, senders: int, latencies: Latencies | None = None
    ) -> Callable[[int], Awaitable[None]]:
        """``run(n)``: ``n`` commands over ``senders`` asyncio tasks, each sending its share.

        With ``latencies``, every command is timed from ``send`` to its return.
        """
        send, make = self.mediator.send, self.command
        clock = time.perf_counter_ns

        async def worker(share: int) -> None:
            if latencies is None:
                for _ in range(share):
                    await send(make())
                return
            record = latencies.record
            for _ in range(share):
                command = make()
                start = clock()
                await send(command)
                record(clock() - start)

        async def run(n: int) -> None:
            shares = [n // senders + (1 if i < n % senders else 0) for i in range(senders)]
            await asyncio.gather(*(worker(s) for s in shares if s))

        return run


def explicit_pipeline(
    uow_factory: Any,
    orchestrator: Any,
    outbox_store: Any,
    *,
    tracer_provider: Any = None,
    meter_provider: Any = None,
    logger_name: str = "cqrs_ddd_core.dispatch",
) -> list[Any]:
    """The EventSourcedMediator default pipeline, listed, with injectable providers."""
    from cqrs_ddd_advanced_core.middleware.event_persistence import EventPersistenceMiddleware
    from cqrs_ddd_advanced_core.middleware.outbox import OutboxMiddleware
    from cqrs_ddd_core.middleware import (
        LoggingMiddleware,
        MetricsMiddleware,
        TracingMiddleware,
        UnitOfWorkMiddleware,
        ValidationMiddleware,
    )

    return [
        TracingMiddleware(
            tracer_provider=tracer_provider,
            persistence_spans=persistence_spans(),  # type: ignore[arg-type]
        ),
        LoggingMiddleware(logger_name=logger_name),
        MetricsMiddleware(meter_provider=meter_provider),
        ValidationMiddleware(),
        UnitOfWorkMiddleware(uow_factory),
        EventPersistenceMiddleware(orchestrator=orchestrator),
        OutboxMiddleware(outbox_store=outbox_store),
    ]


def build_persisted(
    engine: Any,
    prefix: str,
    *,
    middlewares: Callable[[Any, Any, Any], Sequence[Any]] | None = None,
) -> Persisted:
    """An ``EventSourcedMediator`` over ``engine`` (SQLite or PostgreSQL).

    Args:
        engine: From ``cqrs_ddd_core.adapters.sqlalchemy.create_engine``, tables
            created; ``None`` for the in-memory adapters.
        prefix: Aggregate ids are ``{prefix}-{n}``: distinct per case and run.
        middlewares: ``(uow_factory, orchestrator, outbox_store) -> list`` to
            list the pipeline explicitly; ``None`` keeps the mediator's default.
    """
    from cqrs_ddd_advanced_core.cqrs import EventSourcedMediator
    from cqrs_ddd_advanced_core.event_sourcing import EventSourcedPersistenceOrchestrator

    if engine is None:  # the in-memory adapters: the same pipeline, no I/O
        from cqrs_ddd_core.adapters.memory import (
            InMemoryEventStore,
            InMemoryOutboxStore,
            InMemoryStateRepository,
            InMemoryUnitOfWork,
        )

        accounts: Any = InMemoryStateRepository(Account)
        event_store: Any = InMemoryEventStore()
        outbox_store: Any = InMemoryOutboxStore()
        uow_factory: Any = InMemoryUnitOfWork
    else:
        from cqrs_ddd_core.adapters.sqlalchemy import (
            SQLAlchemyEventStore,
            SQLAlchemyOutboxStore,
            SQLAlchemyStateRepository,
            SQLAlchemyUnitOfWork,
        )

        accounts = SQLAlchemyStateRepository(Account, engine)
        event_store = SQLAlchemyEventStore(engine)
        outbox_store = SQLAlchemyOutboxStore(engine)
        uow_factory = SQLAlchemyUnitOfWork.factory(engine)

    async def open_account(command: OpenAccount) -> CommandResponse[str]:
        account = Account.open(command.account_id, command.owner, command.balance)
        accounts.save(account)
        return CommandResponse.from_aggregates(account.id, account)

    registry = HandlerRegistry()
    registry.register_command_handler(OpenAccount, open_account)
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=event_store)
    orchestrator.register_event_sourced_type(Account)
    listed = (
        None if middlewares is None else list(middlewares(uow_factory, orchestrator, outbox_store))
    )
    mediator = EventSourcedMediator(
        registry,
        uow_factory,
        orchestrator,
        outbox_store=outbox_store,
        middlewares=listed,
        query_middlewares=[],
    )
    return Persisted(mediator, engine, prefix, itertools.count(1))
