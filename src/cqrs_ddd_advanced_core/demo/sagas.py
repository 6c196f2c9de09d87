"""The shop's order process: a saga that reserves stock, takes payment and ships.

Every confirmed order starts one (``OrderConfirmed`` starts it, keyed by the
order id). Its steps are commands to three state-stored aggregates, each in
the unit of work that stores the saga's progress (they are state-only: they
announce nothing, so they add no event and no outbox message)::

    reserve (StockReservation)  -- compensated by release
    pay     (Payment)           -- compensated by refund; refused for a share
                                   of orders (the injected payment failures)
    ship    (Shipment)

A refused payment makes the saga release the stock it reserved, so every
compensated saga must leave no reservation behind: :func:`order_process_summary`
checks that against the database.

Only ports are used here; ``cqrs-ddd demo`` gives it the SQL adapters.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from cqrs_ddd_advanced_core.decorators import non_event_sourced
from cqrs_ddd_advanced_core.demo.domain import OrderConfirmed
from cqrs_ddd_advanced_core.sagas import SagaBuilder, SagaDefinition, SagaManager, SagaStatus
from cqrs_ddd_core.domain import AggregateRoot, Command
from cqrs_ddd_core.exceptions import CqrsDddError

if TYPE_CHECKING:
    from cqrs_ddd_advanced_core.demo.app import Shop
    from cqrs_ddd_advanced_core.sagas import SagaStore
    from cqrs_ddd_core.persistence.ports import StateRepository

__all__ = [
    "PROCESS_TYPES",
    "FulfilmentData",
    "OrderProcess",
    "Payment",
    "PaymentDeclinedError",
    "Shipment",
    "StockReservation",
    "install_order_process",
    "order_process",
    "order_process_summary",
]


def _changed(aggregate: AggregateRoot, *, new: bool) -> None:
    """Bump the version of a state-only aggregate (it announces nothing, so it
    records no event): a new one is saved at version 1, a loaded one one above."""
    if new:
        aggregate.mark_persisted()  # expected version 0: the row must not exist yet
    aggregate.version += 1


@non_event_sourced
class StockReservation(AggregateRoot):
    """The stock held for one order (id = the order id)."""

    status: Literal["reserved", "released"] = "reserved"


@non_event_sourced
class Payment(AggregateRoot):
    """One order's payment (id = the order id)."""

    status: Literal["taken", "refunded"] = "taken"
    amount_cents: int = 0


@non_event_sourced
class Shipment(AggregateRoot):
    """One order's shipment (id = the order id)."""


PROCESS_TYPES: tuple[type[AggregateRoot], ...] = (StockReservation, Payment, Shipment)
"""The state-stored aggregates the order process writes."""


class PaymentDeclinedError(CqrsDddError):
    """The (simulated) payment service refused the card."""

    def __init__(self, order_id: str) -> None:
        super().__init__(f"payment for order {order_id} declined")
        self.order_id = order_id


class ReserveStock(Command[None]):
    """Reserve stock for an order (the saga's first step)."""

    order_id: str


class ReleaseStock(Command[None]):
    """Release an order's reserved stock (compensates ``ReserveStock``)."""

    order_id: str


class TakePayment(Command[None]):
    """Take an order's payment (declined for the injected share)."""

    order_id: str
    amount_cents: int


class RefundPayment(Command[None]):
    """Refund an order's payment (compensates ``TakePayment``)."""

    order_id: str


class ShipOrder(Command[None]):
    """Ship an order (the saga's last step)."""

    order_id: str


class FulfilmentData(BaseModel):
    """The saga's data: which order, for how much."""

    order_id: str
    amount_cents: int


def order_process() -> SagaDefinition[FulfilmentData]:
    """The order process's saga definition (``fulfilment``)."""
    return (
        SagaBuilder("fulfilment", FulfilmentData)
        .started_by(
            OrderConfirmed,
            key=lambda e: str(e.aggregate_id),
            data=lambda e: FulfilmentData(order_id=str(e.aggregate_id), amount_cents=e.total_cents),
        )
        .step(
            "reserve",
            send=lambda d: ReserveStock(order_id=d.order_id),
            compensate=lambda d: ReleaseStock(order_id=d.order_id),
        )
        .step(
            "pay",
            send=lambda d: TakePayment(order_id=d.order_id, amount_cents=d.amount_cents),
            compensate=lambda d: RefundPayment(order_id=d.order_id),
        )
        .step("ship", send=lambda d: ShipOrder(order_id=d.order_id))
        .build()
    )


def declines(order_id: str, ratio: float) -> bool:
    """Whether the simulated payment service declines ``order_id`` (stable per order)."""
    return zlib.crc32(order_id.encode()) % 10_000 < ratio * 10_000


class OrderProcess:
    """The order process's handlers and saga manager on the shop's mediator.

    Attributes:
        manager: The saga manager (its worker recovers and times out sagas).
        reservations, payments, shipments: The aggregates' repositories.
    """

    def __init__(
        self,
        shop: Shop,
        saga_store: SagaStore,
        make_repository: Callable[[type[Any]], StateRepository[Any]],
        *,
        payment_failure_ratio: float,
    ) -> None:
        if not 0 <= payment_failure_ratio <= 1:
            raise ValueError("payment_failure_ratio must be between 0 and 1")
        self.failure_ratio = payment_failure_ratio
        self.reservations: StateRepository[StockReservation] = make_repository(StockReservation)
        self.payments: StateRepository[Payment] = make_repository(Payment)
        self.shipments: StateRepository[Shipment] = make_repository(Shipment)
        register = shop.registry.register_command_handler
        register(ReserveStock, self.reserve)
        register(ReleaseStock, self.release)
        register(TakePayment, self.take_payment)
        register(RefundPayment, self.refund)
        register(ShipOrder, self.ship)
        self.manager = SagaManager(shop.mediator, saga_store, [order_process()])

    async def reserve(self, command: ReserveStock) -> None:
        """Reserve the order's stock (the first step)."""
        reservation = StockReservation(id=command.order_id)
        _changed(reservation, new=True)
        self.reservations.save(reservation)

    async def release(self, command: ReleaseStock) -> None:
        """Release the reserved stock (the first step's compensation)."""
        reservation = await self.reservations.get(command.order_id)
        reservation.status = "released"
        _changed(reservation, new=False)
        self.reservations.save(reservation)

    async def take_payment(self, command: TakePayment) -> None:
        """Take the payment, or refuse it for the injected share of orders."""
        if declines(command.order_id, self.failure_ratio):
            raise PaymentDeclinedError(command.order_id)
        payment = Payment(id=command.order_id, amount_cents=command.amount_cents)
        _changed(payment, new=True)
        self.payments.save(payment)

    async def refund(self, command: RefundPayment) -> None:
        """Refund the payment (the second step's compensation)."""
        payment = await self.payments.get(command.order_id)
        payment.status = "refunded"
        _changed(payment, new=False)
        self.payments.save(payment)

    async def ship(self, command: ShipOrder) -> None:
        """Ship the order (the last step)."""
        shipment = Shipment(id=command.order_id)
        _changed(shipment, new=True)
        self.shipments.save(shipment)


def install_order_process(
    shop: Shop,
    saga_store: SagaStore,
    make_repository: Callable[[type[Any]], StateRepository[Any]],
    *,
    payment_failure_ratio: float = 0.2,
) -> OrderProcess:
    """Register the order process on ``shop``; every confirmed order then starts one."""
    return OrderProcess(
        shop, saga_store, make_repository, payment_failure_ratio=payment_failure_ratio
    )


async def order_process_summary(process: OrderProcess) -> dict[str, Any]:
    """The sagas by status, checked against what the database holds.

    ``ok`` is true when no saga is left open or failed, every completed saga
    has a payment taken and a shipment, and every compensated one has no
    reservation left and no payment that was not refunded.
    """
    states = await process.manager.store.list_sagas(saga_type="fulfilment", limit=10**9)
    by_status = Counter(s.status.value for s in states)
    held: list[str] = []
    unshipped: list[str] = []
    for state in states:
        order_id = state.key
        reservation = await process.reservations.find(order_id)
        payment = await process.payments.find(order_id)
        if state.status is SagaStatus.COMPENSATED:
            if (reservation is not None and reservation.status == "reserved") or (
                payment is not None and payment.status == "taken"
            ):
                held.append(order_id)
        elif state.status is SagaStatus.COMPLETED and (
            await process.shipments.find(order_id) is None
            or payment is None
            or payment.status != "taken"
        ):
            unshipped.append(order_id)
    unfinished = by_status["running"] + by_status["compensating"] + by_status["failed"]
    return {
        "started": len(states),
        "by_status": dict(sorted(by_status.items())),
        "compensated_with_reservation": held[:10],
        "completed_without_shipment": unshipped[:10],
        "ok": not held and not unshipped and unfinished == 0,
    }
