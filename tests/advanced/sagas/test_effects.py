"""A step's effects, its outbox messages and the saga's state commit together, once."""

from __future__ import annotations

import pytest

from cqrs_ddd_advanced_core import OutboxMiddleware
from cqrs_ddd_advanced_core.adapters.memory import InMemorySagaStore
from cqrs_ddd_advanced_core.sagas import SagaBuilder, SagaManager, SagaStatus
from cqrs_ddd_core import Command, DomainEvent, HandlerRegistry, Mediator, UnitOfWorkMiddleware
from cqrs_ddd_core.adapters.memory import InMemoryUnitOfWork
from cqrs_ddd_core.cqrs.response import CommandResponse
from cqrs_ddd_core.exceptions import CommitOutcomeUnknownError
from tests.support.backends import Backend, memory_backend
from tests.support.orders import OrderData, OrderPlaced, order_app, saga_store, sync_saga


class Reserved(DomainEvent):
    order_id: str


class Released(DomainEvent):
    order_id: str


class Reserve(Command[None]):
    order_id: str


class Release(Command[None]):
    order_id: str


class Charge(Command[None]):
    order_id: str


class Announce(Command[None]):
    order_id: str


class Charged(DomainEvent):
    order_id: str


def _announce(event: DomainEvent, order_id: str, version: int) -> CommandResponse[None]:
    stamped = event.model_copy(
        update={"aggregate_type": "Stock", "aggregate_id": order_id, "aggregate_version": version}
    )
    return CommandResponse(None, (stamped,))


async def test_a_steps_outbox_messages_commit_with_the_saga_and_a_refused_steps_do_not(
    backend: Backend,
) -> None:
    registry = HandlerRegistry()

    async def reserve(cmd: Reserve) -> CommandResponse[None]:
        return _announce(Reserved(order_id=cmd.order_id), cmd.order_id, 1)

    async def release(cmd: Release) -> CommandResponse[None]:
        return _announce(Released(order_id=cmd.order_id), cmd.order_id, 2)

    async def charge(cmd: Charge) -> CommandResponse[None]:
        # Announces the charge (a nested command), then the card is refused:
        # nothing of the refused step may leave.
        await mediator.send(Announce(order_id=cmd.order_id))
        raise ValueError("declined")

    async def announce(cmd: Announce) -> CommandResponse[None]:
        return _announce(Charged(order_id=cmd.order_id), cmd.order_id, 1)

    registry.register_command_handler(Reserve, reserve)
    registry.register_command_handler(Release, release)
    registry.register_command_handler(Charge, charge)
    registry.register_command_handler(Announce, announce)
    mediator = Mediator(
        registry,
        middlewares=[
            UnitOfWorkMiddleware(backend.uow_factory),
            OutboxMiddleware(outbox_store=backend.outbox_store),
        ],
    )
    definition = (
        SagaBuilder("stock", OrderData)
        .started_by(
            OrderPlaced,
            key=lambda e: e.order_id,
            data=lambda e: OrderData(order_id=e.order_id, qty=1, amount=1),
        )
        .step(
            "reserve",
            send=lambda d: Reserve(order_id=d.order_id),
            compensate=lambda d: Release(order_id=d.order_id),
        )
        .step("charge", send=lambda d: Charge(order_id=d.order_id))
        .build()
    )
    manager = SagaManager(mediator, saga_store(backend), [definition])

    event = OrderPlaced(order_id="o1")
    await manager.handle(event)
    await manager.handle(event)  # redelivered

    saga = await manager.store.find("stock:o1")
    assert saga is not None
    assert saga.status is SagaStatus.COMPENSATED
    messages = await backend.outbox_store.claim_batch(100)
    assert sorted(m.message_type for m in messages) == ["Released", "Reserved"]


@pytest.mark.parametrize("committed", [True, False], ids=["committed", "not-committed"])
async def test_a_transition_whose_commit_outcome_is_unknown_is_retried_and_applied_once(
    committed: bool,
) -> None:
    backend = memory_backend()
    doubts = {"left": 3}

    class DoubtfulUnitOfWork(InMemoryUnitOfWork):
        """The connection drops around COMMIT: after it went through, or before."""

        async def commit(self) -> None:
            if doubts["left"] and self.has_staged:
                doubts["left"] -= 1
                if committed:
                    await super().commit()
                else:
                    await self.rollback()
                raise CommitOutcomeUnknownError("connection lost during COMMIT")
            await super().commit()

    backend.uow_factory = DoubtfulUnitOfWork
    app = order_app(backend, sync_saga())

    await app.manager.handle(OrderPlaced(order_id="o1"))

    assert doubts["left"] == 0
    saga = await app.manager.store.find("order:o1")
    assert saga is not None
    assert saga.status is SagaStatus.COMPLETED
    assert await app.ledger("o1") == ["reserve", "pay", "ship"]


def test_the_memory_saga_store_is_shared_by_the_backend() -> None:
    backend = memory_backend()
    assert saga_store(backend) is saga_store(backend)
    assert isinstance(saga_store(backend), InMemorySagaStore)
