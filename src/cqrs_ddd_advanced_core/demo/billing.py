"""The demo's second service: billing, consuming the shop's order and invoice events.

It has a database of its own with two tables, written through each delivery's
inbox transaction (so each event is applied exactly once):

* ``billing_ledger``: one row per event received (message id, order, version,
  type); a version that does not follow the previous one of its order is
  counted in :attr:`BillingService.out_of_order` (it must stay 0);
* ``billing_charges``: one row per invoice, the amount to charge.

Only ports are used: the handler writes with the transaction's connection
(``exec_driver_sql``, the same SQL on SQLite and PostgreSQL).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cqrs_ddd_advanced_core.demo.domain import INVOICE_EVENTS, ORDER_EVENTS
from cqrs_ddd_advanced_core.messaging import IncomingMessage, MessageConsumer, Outcome

if TYPE_CHECKING:
    from cqrs_ddd_core.persistence.ports import InboxStore, InboxTransaction

__all__ = ["BILLING_TABLES_SQL", "BillingService"]

SERVICE = "billing"
BILLING_TABLES_SQL = (
    "CREATE TABLE IF NOT EXISTS billing_ledger (message_id VARCHAR(255) PRIMARY KEY, "
    "aggregate_type VARCHAR(255) NOT NULL, aggregate_id VARCHAR(255) NOT NULL, "
    "version BIGINT NOT NULL, event_type VARCHAR(255) NOT NULL)",
    "CREATE TABLE IF NOT EXISTS billing_charges (invoice_id VARCHAR(255) PRIMARY KEY, "
    "order_id VARCHAR(255) NOT NULL, amount_cents BIGINT NOT NULL)",
)


def _sql(connection: Any, text: str) -> str:
    """``text`` with ``?`` placeholders in the driver's style (SQLite ``?``, asyncpg ``$n``)."""
    if connection.dialect.paramstyle == "qmark":
        return text
    parts = text.split("?")
    return "".join(f"{part}${i}" for i, part in enumerate(parts[:-1], start=1)) + parts[-1]


class BillingService:
    """A consumer named ``billing`` that keeps a ledger and charges invoices.

    Args:
        inbox: The billing database's inbox (a ``SQLAlchemyInboxStore``).
        meter_provider: For the consumer's metrics.
    """

    def __init__(self, inbox: InboxStore, *, meter_provider: Any = None) -> None:
        self.consumer = MessageConsumer(SERVICE, inbox, meter_provider=meter_provider)
        for event in (*ORDER_EVENTS, *INVOICE_EVENTS):
            self.consumer.subscribe(event.type_name(), self._record)
        self.outcomes: Counter[str] = Counter()
        self.out_of_order = 0

    async def process(self, message: IncomingMessage) -> Outcome:
        """The consumer's ``process``, counting outcomes (hand it to the subscriber)."""
        outcome = await self.consumer.process(message)
        self.outcomes[outcome.value] += 1
        return outcome

    async def process_batch(
        self, messages: Sequence[IncomingMessage]
    ) -> list[Outcome | Exception | None]:
        """The consumer's ``process_batch`` (the subscriber batches with it), counting outcomes."""
        results = await self.consumer.process_batch(messages)
        for result in results:
            if isinstance(result, Outcome):
                self.outcomes[result.value] += 1
        return results

    async def _record(self, message: IncomingMessage, tx: InboxTransaction) -> None:
        conn = tx.connection
        version = message.aggregate_version or 0
        previous = await conn.exec_driver_sql(
            _sql(
                conn,
                "SELECT max(version) FROM billing_ledger WHERE aggregate_type = ? "
                "AND aggregate_id = ?",
            ),
            (message.aggregate_type, message.aggregate_id),
        )
        last = previous.scalar() or 0
        if version != last + 1:
            tx.after_commit(self._count_out_of_order)
        await conn.exec_driver_sql(
            _sql(
                conn,
                "INSERT INTO billing_ledger (message_id, aggregate_type, aggregate_id, "
                "version, event_type) VALUES (?, ?, ?, ?, ?)",
            ),
            (
                message.message_id,
                message.aggregate_type,
                message.aggregate_id,
                version,
                message.message_type,
            ),
        )
        if message.message_type == "InvoiceIssued":
            await conn.exec_driver_sql(
                _sql(
                    conn,
                    "INSERT INTO billing_charges (invoice_id, order_id, amount_cents) "
                    "VALUES (?, ?, ?)",
                ),
                (
                    message.aggregate_id,
                    message.payload["order_id"],
                    int(message.payload["amount_cents"]),
                ),
            )

    def _count_out_of_order(self) -> None:
        self.out_of_order += 1
