"""A small application over the SQL adapters, with faults that tests can arm.

The command pipeline is the one the architecture describes, built from the
advanced package's middlewares on a plain core ``Mediator``::

    [retry ->] unit_of_work -> event_persistence -> outbox -> audit -> handler

The handler loads (or opens) an ``Account`` from the state repository,
deposits, saves the state and returns the events; the middlewares append
them to the event store, write one outbox message each and an audit record,
all in the command's unit of work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from cqrs_ddd_advanced_core.event_sourcing import (
    EventSourcedAggregate,
    EventSourcedPersistenceOrchestrator,
)
from cqrs_ddd_advanced_core.middleware import (
    AuditMiddleware,
    EventPersistenceMiddleware,
    OutboxMiddleware,
)
from cqrs_ddd_core import CommandResponse, HandlerRegistry, Mediator
from cqrs_ddd_core.middleware import UnitOfWorkMiddleware
from cqrs_ddd_core.pipeline import Middleware
from tests.support.accounts import Account, Anything, Deposit, Deposited, DepositMany, Opened
from tests.support.backends import Backend

STEPS = ("handler", "append", "outbox", "audit", "commit")
"""Where a fault can be injected. ``commit``: the database refuses the state
row of account ``boom`` (a trigger), after every other row of the flush."""

REFUSED_ID = "boom"


class Ledger(EventSourcedAggregate):
    """An event-sourced account: its state is rebuilt from its stream."""

    balance: int = 0

    @classmethod
    def open(cls, ledger_id: str) -> Ledger:
        ledger = cls.blank(ledger_id)
        ledger.raise_event(Opened(owner="ann"))
        return ledger

    def deposit(self, amount: int, note: str = "") -> None:
        self.raise_event(Deposited(amount=amount, note=note))

    def apply_Opened(self, event: Opened) -> None:
        self.balance = 0

    def apply_Deposited(self, event: Deposited) -> None:
        self.balance += event.amount


class InjectedFault(RuntimeError):
    """The failure a test asked for."""


@dataclass
class Faults:
    armed: str | None = None

    def check(self, step: str) -> None:
        if self.armed == step:
            raise InjectedFault(f"injected fault at {step}")


class _Faulty:
    """Wraps a store; the named methods raise when the fault is armed."""

    def __init__(self, inner: Any, faults: Faults, step: str, methods: tuple[str, ...]) -> None:
        self._inner, self._faults, self._step, self._methods = inner, faults, step, methods

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)
        if name not in self._methods:
            return target

        async def faulty(*args: Any, **kwargs: Any) -> Any:
            self._faults.check(self._step)
            return await target(*args, **kwargs)

        return faulty


@dataclass
class App:
    backend: Backend
    outer: list[Middleware] = field(default_factory=list)
    faults: Faults = field(default_factory=Faults)
    with_outbox: bool = True

    def __post_init__(self) -> None:
        backend, faults = self.backend, self.faults
        self.accounts = backend.repository(Account)
        events = _Faulty(backend.event_store, faults, "append", ("append",))
        outbox = _Faulty(backend.outbox_store, faults, "outbox", ("enqueue",))
        audit = _Faulty(backend.audit_store, faults, "audit", ("stage",))
        orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=events)
        orchestrator.register_event_sourced_type(Account)
        registry = HandlerRegistry()
        registry.register_command_handler(DepositMany, self.deposit_many)
        registry.register_command_handler(Deposit, self.deposit)
        middlewares: list[Middleware] = [
            *self.outer,
            UnitOfWorkMiddleware(backend.uow_factory),
            EventPersistenceMiddleware(orchestrator=orchestrator),
            OutboxMiddleware(outbox_store=outbox),
            AuditMiddleware(audit_store=audit),
        ]
        if not self.with_outbox:
            del middlewares[-2]
        self.registry = registry
        self.mediator = Mediator(registry, middlewares=middlewares)

    async def deposit_many(self, command: DepositMany) -> CommandResponse[int]:
        account = await self.accounts.find(command.account_id)
        if account is None:
            account = Account.open(command.account_id, "owner")
        for amount, note in command.items:
            account.deposit(amount, note)
        if self.faults.armed == "unserialisable":
            account.record_event(Anything(value=object()))
        self.accounts.save(account)  # the dispatch's unit of work
        self.faults.check("handler")
        return CommandResponse.from_aggregates(account.balance, account)

    async def deposit(self, command: Deposit) -> CommandResponse[int]:
        account = await self.accounts.find(command.account_id)
        if account is None:
            account = Account.open(command.account_id, "owner")
        account.deposit(command.amount, command.note)
        self.accounts.save(account)
        return CommandResponse.from_aggregates(account.balance, account)


async def install_refusal(engine: AsyncEngine) -> None:
    """Make the database refuse any state row for account ``boom``."""
    async with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            await conn.execute(
                text(
                    "CREATE TRIGGER IF NOT EXISTS refuse_boom BEFORE INSERT ON aggregate_state "
                    f"WHEN NEW.aggregate_id = '{REFUSED_ID}' "
                    "BEGIN SELECT RAISE(ABORT, 'injected fault at commit'); END"
                )
            )
        else:
            await conn.execute(
                text(
                    "CREATE OR REPLACE FUNCTION refuse_boom() RETURNS trigger AS $$ BEGIN "
                    f"IF NEW.aggregate_id = '{REFUSED_ID}' THEN "
                    "RAISE EXCEPTION 'injected fault at commit'; END IF; RETURN NEW; END $$ "
                    "LANGUAGE plpgsql"
                )
            )
            await conn.execute(text("DROP TRIGGER IF EXISTS refuse_boom ON aggregate_state"))
            await conn.execute(
                text(
                    "CREATE TRIGGER refuse_boom BEFORE INSERT OR UPDATE ON aggregate_state "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_boom()"
                )
            )


async def remove_refusal(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            await conn.execute(text("DROP TRIGGER IF EXISTS refuse_boom"))
        else:
            await conn.execute(text("DROP TRIGGER IF EXISTS refuse_boom ON aggregate_state"))
            await conn.execute(text("DROP FUNCTION IF EXISTS refuse_boom()"))
