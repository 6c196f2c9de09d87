"""The shop's read model: orders per customer with totals, kept by a projection.

``customer_orders`` (a :class:`~cqrs_ddd_advanced_core.projections.Projection`
over a SQL connection) keeps one row per customer in
``demo_customer_orders``: orders placed, confirmed and cancelled, and the
amount invoiced. ``demo_order_customers`` remembers whose each order is, so
a confirmation or cancellation (which does not name the customer) lands on
the right row. :func:`expected_totals` folds the same figures straight from
the events, so the demo can check the read model against them.

The statements are plain SQL that SQLite and PostgreSQL both accept (the
library's own code imports SQLAlchemy only in its adapters); the handlers
take the projection store's ``AsyncConnection``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cqrs_ddd_advanced_core.projections import Projection

if TYPE_CHECKING:
    from cqrs_ddd_core.persistence.records import StoredEvent

__all__ = [
    "CUSTOMER_ORDERS",
    "CustomerTotals",
    "create_read_model",
    "customer_orders_projection",
    "expected_totals",
    "read_customer_totals",
]

CUSTOMER_ORDERS = "customer_orders"
"""The projection's name (its checkpoint's key)."""

_TABLES = (
    "CREATE TABLE IF NOT EXISTS demo_customer_orders ("
    " customer_id VARCHAR(255) PRIMARY KEY, placed INTEGER NOT NULL,"
    " confirmed INTEGER NOT NULL, cancelled INTEGER NOT NULL, invoiced_cents BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS demo_order_customers ("
    " order_id VARCHAR(255) PRIMARY KEY, customer_id VARCHAR(255) NOT NULL)",
)
_COUNT = (
    "INSERT INTO demo_customer_orders"
    " (customer_id, placed, confirmed, cancelled, invoiced_cents) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (customer_id) DO UPDATE SET"
    " placed = demo_customer_orders.placed + excluded.placed,"
    " confirmed = demo_customer_orders.confirmed + excluded.confirmed,"
    " cancelled = demo_customer_orders.cancelled + excluded.cancelled,"
    " invoiced_cents = demo_customer_orders.invoiced_cents + excluded.invoiced_cents"
)


@dataclass(frozen=True, slots=True)
class CustomerTotals:
    """One customer's row of the read model."""

    placed: int = 0
    confirmed: int = 0
    cancelled: int = 0
    invoiced_cents: int = 0


async def _run(tx: Any, sql: str, *params: Any) -> Any:
    """``sql`` with ``?`` placeholders, in the driver's own style."""
    if tx.dialect.name == "postgresql":
        parts = sql.split("?")
        sql = parts[0] + "".join(f"${n}{part}" for n, part in enumerate(parts[1:], start=1))
    return await tx.exec_driver_sql(sql, tuple(params))


async def _count(tx: Any, customer_id: str, column: int, amount: int = 1) -> None:
    values = [0, 0, 0, 0]
    values[column] = amount
    await _run(tx, _COUNT, customer_id, *values)


async def _customer_of(tx: Any, order_id: str) -> str | None:
    result = await _run(
        tx, "SELECT customer_id FROM demo_order_customers WHERE order_id = ?", order_id
    )
    row = result.first()
    return None if row is None else str(row[0])


async def create_read_model(tx: Any) -> None:
    """Create the read model's tables if they are missing."""
    for statement in _TABLES:
        await tx.exec_driver_sql(statement)


async def _reset(tx: Any) -> None:
    await create_read_model(tx)
    await tx.exec_driver_sql("DELETE FROM demo_customer_orders")
    await tx.exec_driver_sql("DELETE FROM demo_order_customers")


def customer_orders_projection() -> Projection[Any]:
    """The ``customer_orders`` projection (handlers take an ``AsyncConnection``)."""
    projection = Projection[Any](CUSTOMER_ORDERS, reset=_reset)

    @projection.on("OrderPlaced")
    async def placed(event: StoredEvent, tx: Any) -> None:
        customer_id = event.payload["customer_id"]
        await _run(
            tx,
            "INSERT INTO demo_order_customers (order_id, customer_id) VALUES (?, ?)",
            event.aggregate_id,
            customer_id,
        )
        await _count(tx, customer_id, 0)

    @projection.on("OrderConfirmed", "OrderCancelled")
    async def closed(event: StoredEvent, tx: Any) -> None:
        customer_id = await _customer_of(tx, event.aggregate_id)
        if customer_id is not None:
            await _count(tx, customer_id, 1 if event.event_type == "OrderConfirmed" else 2)

    @projection.on("InvoiceIssued")
    async def invoiced(event: StoredEvent, tx: Any) -> None:
        await _count(tx, event.payload["customer_id"], 3, int(event.payload["amount_cents"]))

    return projection


def expected_totals(events: Iterable[StoredEvent]) -> dict[str, CustomerTotals]:
    """The read model's figures folded straight from ``events`` (by position)."""
    customers: dict[str, str] = {}
    totals: dict[str, list[int]] = {}
    for event in events:
        if event.event_type == "OrderPlaced":
            customer_id = customers[event.aggregate_id] = event.payload["customer_id"]
            totals.setdefault(customer_id, [0, 0, 0, 0])[0] += 1
        elif event.event_type in ("OrderConfirmed", "OrderCancelled"):
            found = customers.get(event.aggregate_id)
            if found is not None:
                column = 1 if event.event_type == "OrderConfirmed" else 2
                totals.setdefault(found, [0, 0, 0, 0])[column] += 1
        elif event.event_type == "InvoiceIssued":
            row = totals.setdefault(event.payload["customer_id"], [0, 0, 0, 0])
            row[3] += int(event.payload["amount_cents"])
    return {customer: CustomerTotals(*row) for customer, row in totals.items()}


async def read_customer_totals(engine: Any) -> dict[str, CustomerTotals]:
    """The read model as stored (``engine``: the SQL adapters' ``AsyncEngine``)."""
    async with engine.begin() as conn:
        await create_read_model(conn)
        result = await conn.exec_driver_sql(
            "SELECT customer_id, placed, confirmed, cancelled, invoiced_cents"
            " FROM demo_customer_orders"
        )
        return {
            str(row[0]): CustomerTotals(int(row[1]), int(row[2]), int(row[3]), int(row[4]))
            for row in result.all()
        }
