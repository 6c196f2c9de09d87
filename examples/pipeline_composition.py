"""Reorder persistence, audit and a metrics-like step by listing them.

Run it with ``python examples/pipeline_composition.py``.

Three pipelines over the same handlers and in-memory stores:

* **A**: timing outermost; audit innermost (inside the unit of work). The
  audit record commits with the command; a command refused by validation
  never reaches the audit.
* **B**: audit outermost, before validation: it records the refused command
  too; timing, now inside validation, no longer measures the refused one.
* **C**: event persistence listed before the unit of work: refused when the
  pipeline is built, naming the offending order, before any command runs.

Each prints its resolved order (``describe()``), then what the audit saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import structlog

from cqrs_ddd_advanced_core import (
    AuditMiddleware,
    EventPersistenceMiddleware,
    EventSourcedAggregate,
    EventSourcedPersistenceOrchestrator,
    OutboxMiddleware,
)
from cqrs_ddd_core import (
    CallNext,
    Command,
    CommandResponse,
    DispatchContext,
    DomainEvent,
    FieldError,
    HandlerRegistry,
    Mediator,
    MessageValidationError,
    PipelineConfigurationError,
    UnitOfWorkMiddleware,
    ValidationMiddleware,
    placement,
)
from cqrs_ddd_core.adapters.memory import (
    InMemoryAuditStore,
    InMemoryEventStore,
    InMemoryOutboxStore,
    InMemoryUnitOfWork,
)
from cqrs_ddd_core.pipeline import Middleware


class Deposited(DomainEvent):
    amount: int


class Account(EventSourcedAggregate):
    balance: int = 0

    def apply_Deposited(self, event: Deposited) -> None:
        self.balance += event.amount


class Deposit(Command[None]):
    account_id: str
    amount: int


def positive_amount(command: Deposit) -> list[FieldError]:
    return [] if command.amount > 0 else [FieldError(("amount",), "must be positive")]


async def deposit(command: Deposit) -> CommandResponse[None]:
    account = Account.blank(command.account_id)
    account.raise_event(Deposited(amount=command.amount))
    return CommandResponse.from_aggregates(None, account)


durations: dict[str, list[float]] = {}


@placement(name="timing")
async def timing(message: Any, context: DispatchContext, call_next: CallNext) -> Any:
    """A metrics-like step: how long each command type takes, through what it wraps."""
    start = time.perf_counter()
    try:
        return await call_next(message, context)
    finally:
        durations.setdefault(context.message_type, []).append(time.perf_counter() - start)


async def run(label: str, build: Any) -> None:
    registry = HandlerRegistry()
    registry.register_command_handler(Deposit, deposit)
    events, outbox, audit = InMemoryEventStore(), InMemoryOutboxStore(), InMemoryAuditStore()
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=events)
    orchestrator.register_event_sourced_type(Account)
    steps: dict[str, Middleware] = {
        "timing": timing,
        "validation": ValidationMiddleware(validators={Deposit: [positive_amount]}),
        "unit_of_work": UnitOfWorkMiddleware(InMemoryUnitOfWork),
        "event_persistence": EventPersistenceMiddleware(orchestrator=orchestrator),
        "outbox": OutboxMiddleware(outbox_store=outbox),
        "audit": AuditMiddleware(audit_store=audit),
    }
    middlewares: list[Middleware] = [steps[name] for name in build]
    try:
        mediator = Mediator(registry, InMemoryUnitOfWork, middlewares=middlewares)
    except PipelineConfigurationError as exc:
        print(f"{label}: refused: {exc}")
        return
    print(f"{label}: {mediator.pipeline.describe()}")
    await mediator.send(Deposit(account_id="acc-1", amount=50), metadata={"actor": "alice"})
    with contextlib.suppress(MessageValidationError):  # refused: shown by the audit below
        await mediator.send(Deposit(account_id="acc-2", amount=-5), metadata={"actor": "mallory"})
    seen = [
        f"{r.actor}:{r.outcome}" + (f"({r.error_type})" if r.error_type else "")
        for r in await audit.list_records()
    ]
    print(f"{label}: audit saw {', '.join(seen)}")
    print(f"{label}: events stored {await events.latest_position()}, outbox messages {len(outbox)}")
    if "timing" in build:
        print(f"{label}: timing measured {len(durations.pop('Deposit', []))} command(s)")


async def main() -> None:
    await run(
        "A",
        ["timing", "validation", "unit_of_work", "event_persistence", "outbox", "audit"],
    )
    await run(
        "B",
        ["audit", "validation", "timing", "unit_of_work", "outbox", "event_persistence"],
    )
    await run("C", ["timing", "event_persistence", "unit_of_work"])


if __name__ == "__main__":
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    asyncio.run(main())
