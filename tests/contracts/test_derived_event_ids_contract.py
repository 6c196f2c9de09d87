"""Derived event ids, end to end on every adapter (see conftest).

An event recorded while a command runs gets an id derived from the command's
message id, the stream and the event's ordinal on that stream in the
command's unit of work. A handler holding two objects for one stream (it
loaded the aggregate twice, or built it twice) records on both: each event
gets an id of its own, so both are stored, and the same command run again is
recognised as committed before. Never is one event taken for another and
dropped.
"""

from __future__ import annotations

from cqrs_ddd_advanced_core import EventSourcedMediator, EventSourcedPersistenceOrchestrator
from cqrs_ddd_core._ids import derived_id
from cqrs_ddd_core.cqrs import CommandResponse, HandlerRegistry
from tests.support.accounts import Account, Deposit
from tests.support.backends import Backend


def mediator_for(backend: Backend, registry: HandlerRegistry) -> EventSourcedMediator:
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=backend.event_store)
    orchestrator.register_event_sourced_type("Account")
    return EventSourcedMediator(
        registry=registry,
        uow_factory=backend.uow_factory,
        event_persistence_orchestrator=orchestrator,
    )


async def open_account(backend: Backend, registry: HandlerRegistry, account_id: str) -> None:
    class Open(Deposit):
        pass

    async def open_(command: Open) -> CommandResponse[int]:
        account = Account.open(command.account_id, "ann")
        return CommandResponse.from_aggregates(0, account)

    registry.register_command_handler(Open, open_)
    await mediator_for(backend, registry).send(Open(account_id=account_id, amount=0))


async def deposit_through_two_objects(command: Deposit) -> CommandResponse[int]:
    """Deposits ``amount`` and then 1 more on two objects for the one stream."""
    first = Account(id=command.account_id, version=1)  # as loaded: opened, nothing else
    first.deposit(command.amount)
    second = Account(id=command.account_id, version=first.version)  # loaded again, after it
    second.deposit(1)
    return CommandResponse.from_aggregates(second.version, first, second)


async def test_events_recorded_on_two_objects_for_one_stream_are_both_stored(
    backend: Backend,
) -> None:
    registry = HandlerRegistry()
    await open_account(backend, registry, "a1")
    registry.register_command_handler(Deposit, deposit_through_two_objects)
    command = Deposit(account_id="a1", amount=5)

    response = await mediator_for(backend, registry).send(command)

    assert response.result == 3
    stored = await backend.event_store.load_stream("Account", "a1")
    assert [(e.version, e.event_type, e.payload.get("amount")) for e in stored] == [
        (1, "Opened", None),
        (2, "Deposited", 5),
        (3, "Deposited", 1),
    ]
    assert [e.event_id for e in stored[1:]] == [
        derived_id(command.message_id, "Account", "a1", 1),
        derived_id(command.message_id, "Account", "a1", 2),
    ]


async def test_the_same_command_run_again_is_recognised_and_writes_nothing(
    backend: Backend,
) -> None:
    """A retry after an unknown outcome: the same message id derives the same
    two distinct ids, all stored in the stream already, so nothing is written."""
    registry = HandlerRegistry()
    await open_account(backend, registry, "a1")
    registry.register_command_handler(Deposit, deposit_through_two_objects)
    command = Deposit(account_id="a1", amount=5)
    mediator = mediator_for(backend, registry)
    await mediator.send(command)
    before = await backend.counts()

    await mediator.send(command)

    assert await backend.counts() == before
    stored = await backend.event_store.load_stream("Account", "a1")
    assert [(e.version, e.payload.get("amount")) for e in stored] == [(1, None), (2, 5), (3, 1)]
