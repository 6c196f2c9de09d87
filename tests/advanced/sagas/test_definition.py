"""A saga that could never be correlated, completed or run is refused when it is built."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from cqrs_ddd_advanced_core.domain import SagaDefinitionError
from cqrs_ddd_advanced_core.sagas import SagaBuilder, SagaManager
from cqrs_ddd_core import HandlerRegistry, Mediator
from cqrs_ddd_core.exceptions import ConfigurationError
from tests.support.orders import (
    OrderData,
    OrderPlaced,
    PaymentDeclined,
    PaymentTaken,
    Ship,
    sync_saga,
)


def ship(d: OrderData) -> Ship:
    return Ship(order_id=d.order_id)


def started() -> SagaBuilder[OrderData]:
    return SagaBuilder("order", OrderData).started_by(
        OrderPlaced,
        key=lambda e: e.order_id,
        data=lambda e: OrderData(order_id=e.order_id, qty=1, amount=1),
    )


BROKEN: dict[str, tuple[Callable[[], Any], str]] = {
    "nothing starts it": (
        lambda: SagaBuilder("order", OrderData).step("ship", send=ship).build(),
        "nothing can start it",
    ),
    "no steps": (lambda: started().build(), "could never complete"),
    "an awaited event without a key": (
        lambda: started().step("pay", send=ship, wait_for=PaymentTaken).build(),
        "could never find its saga",
    ),
    "a failure event without a key": (
        lambda: (
            started()
            .correlate(PaymentTaken, key=lambda e: e.order_id)
            .step("pay", send=ship, wait_for=PaymentTaken, fail_on=PaymentDeclined)
            .build()
        ),
        "could never find its saga",
    ),
    "two steps with one name": (
        lambda: started().step("ship", send=ship).step("ship", send=ship).build(),
        "used twice",
    ),
    "a timeout without an awaited event": (
        lambda: started().step("ship", send=ship, timeout=timedelta(seconds=1)).build(),
        "needs wait_for",
    ),
    "a non-positive timeout": (
        lambda: (
            started()
            .correlate(PaymentTaken, key=lambda e: e.order_id)
            .step("pay", send=ship, wait_for=PaymentTaken, timeout=timedelta(0))
            .build()
        ),
        "must be positive",
    ),
    "one event awaited by two steps": (
        lambda: (
            started()
            .correlate(PaymentTaken, key=lambda e: e.order_id)
            .step("a", send=ship, wait_for=PaymentTaken)
            .step("b", send=ship, wait_for=PaymentTaken)
            .build()
        ),
        "awaited by steps",
    ),
    "a start event that also completes a step": (
        lambda: (
            started()
            .correlate(OrderPlaced, key=lambda e: e.order_id)
            .step("a", send=ship, wait_for=OrderPlaced)
            .build()
        ),
        "both starts the saga",
    ),
    "a non-event": (
        lambda: SagaBuilder("order", OrderData).started_by(
            str,  # type: ignore[arg-type]
            key=str,
            data=str,  # type: ignore[arg-type]
        ),
        "not a DomainEvent",
    ),
    "a data type that is not a model": (
        lambda: SagaBuilder("order", dict),  # type: ignore[type-var]
        "not a pydantic model",
    ),
    "a name with spaces": (lambda: SagaBuilder("an order", OrderData), "letters, digits"),
    "two start events": (
        lambda: started().started_by(OrderPlaced, key=str, data=lambda e: e),
        "one event type only",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_saga_is_refused_when_built(case: str) -> None:
    build, reason = BROKEN[case]

    with pytest.raises(SagaDefinitionError, match=reason) as caught:
        build()

    assert isinstance(caught.value, ConfigurationError)
    assert caught.value.saga_type in ("order", "an order")


def test_a_builder_builds_once() -> None:
    builder = started().step("ship", send=ship)
    builder.build()

    with pytest.raises(SagaDefinitionError, match="built already"):
        builder.step("more", send=ship)


def test_two_definitions_with_one_name_are_refused_by_the_manager() -> None:
    from cqrs_ddd_advanced_core.adapters.memory import InMemorySagaStore

    mediator = Mediator(HandlerRegistry())

    with pytest.raises(SagaDefinitionError, match="two definitions"):
        SagaManager(mediator, InMemorySagaStore(), [sync_saga(), sync_saga()])


def test_a_definition_lists_the_events_it_reacts_to() -> None:
    from tests.support.orders import awaiting_saga

    definition = awaiting_saga()

    assert definition.event_types == (OrderPlaced, PaymentTaken, PaymentDeclined)
    assert [s.name for s in definition.steps] == ["reserve", "pay", "ship"]
    assert definition.step_named("pay").awaits
