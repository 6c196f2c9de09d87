"""The whole pipeline on SQLite and PostgreSQL: state, events and outbox commit together,
and a failure at any step leaves none of them behind."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cqrs_ddd_advanced_core import EventSourcedMediator, EventSourcedPersistenceOrchestrator
from cqrs_ddd_advanced_core.event_sourcing import EventSourcedRepository
from cqrs_ddd_core import CommandResponse, HandlerRegistry
from cqrs_ddd_core.exceptions import PersistenceError
from cqrs_ddd_core.persistence import OutboxStatus
from tests.adapters.sqlalchemy.app import (
    REFUSED_ID,
    STEPS,
    App,
    InjectedFault,
    Ledger,
    install_refusal,
    remove_refusal,
)
from tests.support.accounts import Deposited, DepositMany, Opened
from tests.support.backends import Backend, empty_tables


@pytest.fixture
async def app(db: Backend) -> AsyncIterator[App]:
    assert db.engine is not None
    await install_refusal(db.engine)
    try:
        yield App(db)
    finally:
        await remove_refusal(db.engine)


async def test_state_events_and_outbox_commit_together(app: App, db: Backend) -> None:
    response = await app.mediator.send(
        DepositMany(account_id="a1", items=[(5, "first"), (7, "second")]),
        metadata={"actor": "ann"},
    )

    assert response.result == 12
    stream = await db.event_store.load_stream("Account", "a1")
    assert [(e.event_type, e.version) for e in stream] == [
        ("Opened", 1),
        ("Deposited", 2),
        ("Deposited", 3),
    ]
    assert (await app.accounts.get("a1")).version == 3
    for event in stream:
        message = await db.outbox_store.get(event.event_id)
        assert message is not None
        assert message.status is OutboxStatus.PENDING
        assert message.payload == event.payload
        assert message.correlation_id == event.correlation_id == response.correlation_id
        assert message.causation_id == event.causation_id == response.causation_id
    (record,) = await db.audit_store.list_records()
    assert (record.outcome, record.actor, record.message_type) == ("success", "ann", "DepositMany")
    assert await db.counts() == {"events": 3, "outbox": 3, "audit_log": 1, "aggregate_state": 1}


async def test_a_later_command_continues_the_stream_and_the_state(app: App, db: Backend) -> None:
    await app.mediator.send(DepositMany(account_id="a1", items=[(1, "")]))
    await app.mediator.send(DepositMany(account_id="a1", items=[(2, ""), (3, "")]))

    assert (await app.accounts.get("a1")).balance == 6
    versions = [e.version for e in await db.event_store.load_stream("Account", "a1")]
    assert versions == [1, 2, 3, 4]


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@example(step="commit", items=[(1, "")])
@example(step="audit", items=[(1, "")])
@example(step="outbox", items=[(1, "")])
@example(step="append", items=[(1, "")])
@example(step="handler", items=[(1, "")])
@example(step=None, items=[(1, "it's a \"quoted\" 'note'; DROP TABLE events; --")])
@given(
    step=st.sampled_from((None, *STEPS)),
    items=st.lists(
        st.tuples(st.integers(-(10**6), 10**6), st.text(max_size=40)), min_size=1, max_size=4
    ),
)
async def test_a_failure_at_any_step_leaves_no_state_no_events_and_no_outbox(
    app: App, db: Backend, step: str | None, items: list[tuple[int, str]]
) -> None:
    assert db.engine is not None
    await empty_tables(db.engine)
    app.faults.armed = None if step == "commit" else step
    account_id = REFUSED_ID if step == "commit" else "a1"

    if step is None:
        await app.mediator.send(DepositMany(account_id=account_id, items=items))
    else:
        expected = PersistenceError if step == "commit" else InjectedFault
        with pytest.raises(expected):
            await app.mediator.send(DepositMany(account_id=account_id, items=items))

    counts = await db.counts()
    outcomes = [r.outcome for r in await db.audit_store.list_records()]
    if step is None:
        assert counts == {
            "events": len(items) + 1,
            "outbox": len(items) + 1,
            "audit_log": 1,
            "aggregate_state": 1,
        }
        stream = await db.event_store.load_stream("Account", account_id)
        assert [e.payload["note"] for e in stream[1:]] == [note for _, note in items]
    else:
        assert (counts["events"], counts["outbox"], counts["aggregate_state"]) == (0, 0, 0)
        # The audit middleware records failures on their own, after the rollback;
        # the command's own success record is never kept.
        assert "success" not in outcomes


async def test_the_event_sourced_mediator_persists_on_both_databases(db: Backend) -> None:
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=db.event_store)
    ledgers = EventSourcedRepository(db.event_store, Ledger, event_types=(Opened, Deposited))

    async def handle(command: DepositMany) -> CommandResponse[int]:
        ledger = await ledgers.find(command.account_id)
        if ledger is None:
            ledger = Ledger.open(command.account_id)
        for amount, note in command.items:
            ledger.deposit(amount, note)
        return CommandResponse.from_aggregates(ledger.balance, ledger)

    registry = HandlerRegistry()
    registry.register_command_handler(DepositMany, handle)
    mediator = EventSourcedMediator(
        registry, db.uow_factory, orchestrator, outbox_store=db.outbox_store
    )
    mediator.configure_event_sourced_type(Ledger)

    await mediator.send(DepositMany(account_id="l1", items=[(3, "x")]))
    response = await mediator.send(DepositMany(account_id="l1", items=[(4, "y")]))

    assert response.result == 7
    stream = await db.event_store.load_stream("Ledger", "l1")
    assert [(e.event_type, e.version) for e in stream] == [
        ("Opened", 1),
        ("Deposited", 2),
        ("Deposited", 3),
    ]
    assert [m.message_id for m in await db.outbox_store.claim_batch()] == [
        e.event_id for e in stream
    ]
