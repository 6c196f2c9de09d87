"""A small domain shared by the persistence suites: accounts and their events."""

from __future__ import annotations

from typing import Any

from cqrs_ddd_core import AggregateRoot, Command, DomainEvent


class Opened(DomainEvent):
    owner: str


class Deposited(DomainEvent):
    amount: int
    note: str = ""


class Anything(DomainEvent):
    """An event whose payload is whatever the test puts in it."""

    value: Any = None


class Account(AggregateRoot):
    owner: str = ""
    balance: int = 0

    @classmethod
    def open(cls, account_id: str, owner: str) -> Account:
        account = cls(id=account_id)
        account.owner = owner
        account.record_event(Opened(owner=owner))
        return account

    def deposit(self, amount: int, note: str = "") -> Deposited:
        self.balance += amount
        return self.record_event(Deposited(amount=amount, note=note))


class Deposit(Command[int]):
    account_id: str
    amount: int
    note: str = ""


class DepositMany(Command[int]):
    """Opens the account if needed, then deposits each (amount, note) in turn."""

    account_id: str
    items: list[tuple[int, str]]
