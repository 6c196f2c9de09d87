"""Projection and ProjectionRunner on the in-memory adapters: configuration and failures."""

from __future__ import annotations

from typing import Any

import pytest

from cqrs_ddd_advanced_core.domain import EventSourcingConfigurationError, ProjectionError
from cqrs_ddd_advanced_core.projections import Projection, ProjectionRunner
from cqrs_ddd_core.adapters.memory import (
    InMemoryEventStore,
    InMemoryProjectionStore,
    InMemoryProjectionTransaction,
    InMemoryUnitOfWork,
)
from cqrs_ddd_core.exceptions import ConcurrencyError
from cqrs_ddd_core.persistence import StoredEvent
from tests.support.accounts import Deposited, Opened

Tx = InMemoryProjectionTransaction


async def nothing(event: StoredEvent, tx: Tx) -> None:
    return None


@pytest.mark.parametrize("name", ["", "   ", "x" * 256, 3])
def test_a_projection_needs_a_name_of_1_to_255_characters(name: Any) -> None:
    with pytest.raises(EventSourcingConfigurationError):
        Projection[Tx](name)


def test_one_handler_per_event_type_and_handlers_must_be_callable() -> None:
    projection = Projection[Tx]("p", {"Opened": nothing})

    with pytest.raises(EventSourcingConfigurationError, match="already"):
        projection.on(Opened)(nothing)
    with pytest.raises(EventSourcingConfigurationError, match="not callable"):
        projection.add("Deposited", 42)  # type: ignore[arg-type]
    with pytest.raises(EventSourcingConfigurationError):
        projection.add(object, nothing)  # type: ignore[arg-type]
    assert projection.event_types == {"Opened"}
    assert projection.handles("Opened")
    assert not projection.handles("Deposited")


@pytest.mark.parametrize(("batch_size", "poll"), [(0, 1.0), (True, 1.0), (10, 0), (10, -1)])
def test_a_runner_refuses_a_bad_batch_size_or_poll_interval(batch_size: Any, poll: Any) -> None:
    with pytest.raises(EventSourcingConfigurationError):
        ProjectionRunner(
            Projection[Tx]("p"),
            events=InMemoryEventStore(),
            store=InMemoryProjectionStore(),
            batch_size=batch_size,
            poll_interval=poll,
        )


async def test_events_of_types_without_a_handler_move_the_checkpoint_past_them() -> None:
    events = InMemoryEventStore()
    uow = InMemoryUnitOfWork()
    await events.append(
        "Account", "a", [Opened(owner="x"), Deposited(amount=1)], expected_version=0, uow=uow
    )
    await uow.commit()
    store = InMemoryProjectionStore()

    await ProjectionRunner(
        Projection[Tx]("p", {"Deposited": nothing}), events=events, store=store
    ).catch_up()

    assert await store.checkpoints() == {"p": 2}


async def test_a_handler_raising_one_of_our_errors_fails_the_batch_as_a_projection_error() -> None:
    events = InMemoryEventStore()
    uow = InMemoryUnitOfWork()
    await events.append("Account", "a", [Opened(owner="x")], expected_version=0, uow=uow)
    await uow.commit()

    async def conflicting(event: StoredEvent, tx: Tx) -> None:
        raise ConcurrencyError("elsewhere", 1, 2)

    runner = ProjectionRunner(
        Projection[Tx]("p", {"Opened": conflicting}),
        events=events,
        store=InMemoryProjectionStore(),
    )
    # Not taken for a lost checkpoint race (which catch_up would retry for ever).
    with pytest.raises(ProjectionError) as caught:
        await runner.catch_up()

    assert isinstance(caught.value.__cause__, ConcurrencyError)
    assert (caught.value.position, caught.value.event_type) == (1, "Opened")
