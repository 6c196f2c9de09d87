"""The shop's commands, queries and read models."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from cqrs_ddd_advanced_core.demo.domain import OrderLine
from cqrs_ddd_core.domain import Command, Query

__all__ = [
    "AddOrderLine",
    "CancelOrder",
    "ConfirmOrder",
    "GetOrderSummary",
    "GetPreferences",
    "IssueInvoice",
    "OrderSummary",
    "PlaceOrder",
    "PreferencesView",
    "UpdatePreferences",
]

Id = Annotated[str, Field(min_length=1, max_length=128)]


class PlaceOrder(Command[str]):
    """Open an order with its first lines; returns the order id."""

    order_id: Id
    customer_id: Id
    lines: list[OrderLine] = Field(min_length=1, max_length=50)


class AddOrderLine(Command[int]):
    """Add a line to an open order; returns the order's new total in cents."""

    order_id: Id
    line: OrderLine


class ConfirmOrder(Command[str]):
    """Confirm an open order and issue its invoice; returns the invoice id."""

    order_id: Id


class CancelOrder(Command[None]):
    """Cancel an open order."""

    order_id: Id
    reason: str = Field(default="customer request", max_length=200)


class IssueInvoice(Command[str]):
    """Issue the invoice of a confirmed order (sent by the ConfirmOrder handler)."""

    invoice_id: Id
    order_id: Id
    customer_id: Id
    amount_cents: int = Field(ge=0)


class UpdatePreferences(Command[int]):
    """Change a user's preferences; returns their new version."""

    user_id: Id
    language: str = Field(min_length=2, max_length=8)
    currency: str = Field(min_length=3, max_length=3)
    newsletter: bool = False


class OrderSummary(BaseModel):
    """What the order looks like now, rebuilt from its events."""

    model_config = ConfigDict(frozen=True)

    order_id: str
    customer_id: str
    status: str
    lines: int
    total_cents: int
    version: int


class PreferencesView(BaseModel):
    """A user's preferences as the ``GetPreferences`` query returns them."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    language: str
    currency: str
    newsletter: bool
    version: int


class GetOrderSummary(Query[OrderSummary]):
    """Raises ``RecordNotFoundError`` for an order that was never placed."""

    order_id: Id


class GetPreferences(Query[PreferencesView | None]):
    """``None`` for a user who never changed anything."""

    user_id: Id
