"""An order process for the saga suites: reserve stock, take payment, ship.

Every step's handler appends what it did to the order's :class:`Ledger`, in
the step's unit of work, so a test can see each effect and how often it
committed. ``declined`` orders have their payment refused (a command that
raises, or a ``PaymentDeclined`` event for the awaiting variant); ``silent``
orders never hear back from the payment service (their step times out);
``unshippable`` orders fail at the last step (payment and stock are undone).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from cqrs_ddd_advanced_core.adapters.memory import InMemorySagaStore
from cqrs_ddd_advanced_core.adapters.sqlalchemy import SQLAlchemySagaStore
from cqrs_ddd_advanced_core.sagas import SagaBuilder, SagaDefinition, SagaManager
from cqrs_ddd_core import AggregateRoot, Command, DomainEvent, HandlerRegistry, Mediator
from cqrs_ddd_core.cqrs.response import CommandResponse
from tests.support.backends import Backend


class OrderPlaced(DomainEvent):
    order_id: str
    qty: int = 1
    amount: int = 10


class PaymentTaken(DomainEvent):
    order_id: str


class PaymentDeclined(DomainEvent):
    order_id: str
    reason: str = "declined"


class Touched(DomainEvent):
    op: str


class Ledger(AggregateRoot):
    """What was done for one order, in commit order."""

    ops: list[str] = []


class Stock(AggregateRoot):
    reservations: dict[str, int] = {}


class OrderData(BaseModel):
    order_id: str
    qty: int
    amount: int
    receipt: str | None = None


class PlaceOrder(Command[str]):
    order_id: str
    qty: int = 1
    amount: int = 10


class ReserveStock(Command[None]):
    order_id: str
    qty: int


class ReleaseStock(Command[None]):
    order_id: str


class TakePayment(Command[str]):
    order_id: str
    amount: int


class RequestPayment(Command[None]):
    order_id: str
    amount: int


class RefundPayment(Command[None]):
    order_id: str


class Ship(Command[None]):
    order_id: str


class PaymentRefused(ValueError):
    """The payment service said no."""


SKU = "sku-1"


@dataclass
class OrderApp:
    """A mediator, a saga manager and the order domain on one backend."""

    backend: Backend
    mediator: Mediator
    manager: SagaManager
    declined: set[str] = field(default_factory=set)
    silent: set[str] = field(default_factory=set)
    failing_refunds: set[str] = field(default_factory=set)
    unshippable: set[str] = field(default_factory=set)

    async def ledger(self, order_id: str) -> list[str]:
        found = await self.backend.repository(Ledger).find(order_id)
        return [] if found is None else list(found.ops)

    async def reservations(self) -> dict[str, int]:
        found = await self.backend.repository(Stock).find(SKU)
        return {} if found is None else dict(found.reservations)


def sync_saga() -> SagaDefinition[OrderData]:
    """reserve (release) -> pay (refund) -> ship: each step succeeds with its command."""
    return (
        SagaBuilder("order", OrderData)
        .started_by(OrderPlaced, key=lambda e: e.order_id, data=_data)
        .step(
            "reserve",
            send=lambda d: ReserveStock(order_id=d.order_id, qty=d.qty),
            compensate=lambda d: ReleaseStock(order_id=d.order_id),
        )
        .step(
            "pay",
            send=lambda d: TakePayment(order_id=d.order_id, amount=d.amount),
            compensate=lambda d: RefundPayment(order_id=d.order_id),
            on_result=lambda d, receipt: d.model_copy(update={"receipt": receipt}),
        )
        .step("ship", send=lambda d: Ship(order_id=d.order_id))
        .build()
    )


def awaiting_saga(timeout: timedelta = timedelta(seconds=30)) -> SagaDefinition[OrderData]:
    """reserve -> request payment, then wait for PaymentTaken / PaymentDeclined -> ship."""
    return (
        SagaBuilder("order-remote", OrderData)
        .started_by(OrderPlaced, key=lambda e: e.order_id, data=_data)
        .correlate(PaymentTaken, key=lambda e: e.order_id)
        .correlate(PaymentDeclined, key=lambda e: e.order_id)
        .step(
            "reserve",
            send=lambda d: ReserveStock(order_id=d.order_id, qty=d.qty),
            compensate=lambda d: ReleaseStock(order_id=d.order_id),
        )
        .step(
            "pay",
            send=lambda d: RequestPayment(order_id=d.order_id, amount=d.amount),
            compensate=lambda d: RefundPayment(order_id=d.order_id),
            wait_for=PaymentTaken,
            fail_on=PaymentDeclined,
            timeout=timeout,
        )
        .step("ship", send=lambda d: Ship(order_id=d.order_id))
        .build()
    )


def _data(event: OrderPlaced) -> OrderData:
    return OrderData(order_id=event.order_id, qty=event.qty, amount=event.amount)


def saga_store(backend: Backend) -> Any:
    """The backend's saga store."""
    if backend.engine is None:
        store = backend.repositories.get(InMemorySagaStore)  # type: ignore[call-overload]
        if store is None:
            store = backend.repositories[InMemorySagaStore] = InMemorySagaStore()  # type: ignore[index]
        return store
    return SQLAlchemySagaStore(backend.engine)


def order_app(
    backend: Backend, definition: SagaDefinition[OrderData], **manager_options: Any
) -> OrderApp:
    """The order domain's handlers and a saga manager running ``definition``."""
    registry = HandlerRegistry()
    mediator = Mediator(registry, backend.uow_factory)
    manager = SagaManager(mediator, saga_store(backend), [definition], **manager_options)
    app = OrderApp(backend, mediator, manager)
    ledgers = backend.repository(Ledger)
    stocks = backend.repository(Stock)

    async def touch(order_id: str, op: str) -> None:
        ledger = await ledgers.find(order_id) or Ledger(id=order_id)
        ledger.ops = [*ledger.ops, op]
        ledger.record_event(Touched(op=op))
        ledgers.save(ledger)

    async def place(cmd: PlaceOrder) -> CommandResponse[str]:
        await touch(cmd.order_id, "place")
        event = OrderPlaced(order_id=cmd.order_id, qty=cmd.qty, amount=cmd.amount)
        return CommandResponse(cmd.order_id, (event,))

    async def reserve(cmd: ReserveStock) -> None:
        stock = await stocks.find(SKU) or Stock(id=SKU)
        stock.reservations = {**stock.reservations, cmd.order_id: cmd.qty}
        stock.record_event(Touched(op="reserve"))
        stocks.save(stock)
        await touch(cmd.order_id, "reserve")

    async def release(cmd: ReleaseStock) -> None:
        stock = await stocks.find(SKU) or Stock(id=SKU)
        stock.reservations = {k: v for k, v in stock.reservations.items() if k != cmd.order_id}
        stock.record_event(Touched(op="release"))
        stocks.save(stock)
        await touch(cmd.order_id, "release")

    async def take(cmd: TakePayment) -> str:
        if cmd.order_id in app.declined:
            raise PaymentRefused(f"card of {cmd.order_id} declined")
        await touch(cmd.order_id, "pay")
        return f"receipt-{cmd.order_id}"

    async def request(cmd: RequestPayment) -> CommandResponse[None]:
        await touch(cmd.order_id, "pay")
        if cmd.order_id in app.silent:
            return CommandResponse(None, ())
        if cmd.order_id in app.declined:
            return CommandResponse(None, (PaymentDeclined(order_id=cmd.order_id),))
        return CommandResponse(None, (PaymentTaken(order_id=cmd.order_id),))

    async def refund(cmd: RefundPayment) -> None:
        if cmd.order_id in app.failing_refunds:
            raise RuntimeError("the payment service is down")
        await touch(cmd.order_id, "refund")

    async def ship(cmd: Ship) -> None:
        if cmd.order_id in app.unshippable:
            raise RuntimeError(f"no courier for {cmd.order_id}")
        await touch(cmd.order_id, "ship")

    registry.register_command_handler(PlaceOrder, place)
    registry.register_command_handler(ReserveStock, reserve)
    registry.register_command_handler(ReleaseStock, release)
    registry.register_command_handler(TakePayment, take)
    registry.register_command_handler(RequestPayment, request)
    registry.register_command_handler(RefundPayment, refund)
    registry.register_command_handler(Ship, ship)
    return app
