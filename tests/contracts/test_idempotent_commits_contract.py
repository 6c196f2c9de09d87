"""Idempotent commits by event id, for every adapter (see conftest).

A unit of work whose staged event ids are all stored already, each in the
stream it appends to, committed before (a retried command): nothing of it is
written and commit returns normally. Some but not all stored: a
``ConcurrencyError`` naming the stream. Without events a unit of work cannot
be recognised. ("Commit outcomes" in docs/persistence.md.)
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cqrs_ddd_core.exceptions import ConcurrencyError, PersistenceError
from cqrs_ddd_core.persistence import AuditRecord, OutboxMessage
from tests.support.accounts import Account, Deposited, Opened
from tests.support.backends import Backend

NOW = datetime(2024, 1, 1, tzinfo=UTC)


def audit_record(audit_id: str) -> AuditRecord:
    return AuditRecord(
        audit_id=audit_id,
        message_id="cmd-1",
        message_type="Open",
        correlation_id="corr",
        causation_id=None,
        actor="ann",
        outcome="success",
        error_type=None,
        started_at=NOW,
        duration_ms=1.0,
        metadata={},
    )


def new_account(account_id: str) -> Account:
    """A new account at version 1 (its opening event left out)."""
    account = Account.open(account_id, "ann")
    account.collect_events()
    return account


async def stage_open(backend: Backend, uow: object, opened: Opened, audit_id: str) -> None:
    """Everything a command opening account a1 stages: event, outbox, state, audit."""
    await backend.event_store.append("Account", "a1", [opened], expected_version=0, uow=uow)
    await backend.outbox_store.enqueue(
        [OutboxMessage(opened.event_id, opened.type_name(), opened.payload(), NOW)], uow=uow
    )
    backend.repository(Account).save(new_account("a1"), uow=uow)
    await backend.audit_store.stage(audit_record(audit_id), uow)


async def commit_open(backend: Backend, opened: Opened, audit_id: str) -> None:
    uow = backend.uow_factory()
    await stage_open(backend, uow, opened, audit_id)
    await uow.commit()


async def test_the_same_unit_of_work_committed_again_writes_nothing_and_succeeds(
    backend: Backend,
) -> None:
    opened = Opened(owner="ann")
    await commit_open(backend, opened, "audit-1")
    before = await backend.counts()

    # The command is retried after an unknown outcome: same event id, and
    # everything else it stages (its state row, outbox and audit rows) again.
    await commit_open(backend, opened, "audit-2")

    assert await backend.counts() == before
    assert [e.event_id for e in await backend.event_store.load_stream("Account", "a1")] == [
        opened.event_id
    ]


async def test_a_retry_staged_at_the_streams_new_head_is_recognised(backend: Backend) -> None:
    opened, deposited = Opened(owner="ann"), Deposited(amount=5)
    uow = backend.uow_factory()
    await backend.event_store.append(
        "Account", "a1", [opened, deposited], expected_version=0, uow=uow
    )
    await uow.commit()

    # The retried command reloaded the account (now at version 2) and recorded
    # its deposit again, with the same (stable) event id.
    uow = backend.uow_factory()
    await backend.event_store.append("Account", "a1", [deposited], expected_version=2, uow=uow)
    await uow.commit()

    stored = await backend.event_store.load_stream("Account", "a1")
    assert [(e.version, e.event_id) for e in stored] == [
        (1, opened.event_id),
        (2, deposited.event_id),
    ]


async def test_only_some_ids_stored_is_a_conflict_naming_the_stream(backend: Backend) -> None:
    opened = Opened(owner="ann")
    await commit_open(backend, opened, "audit-1")
    before = await backend.counts()

    uow = backend.uow_factory()
    await backend.event_store.append(
        "Account", "a1", [opened, Deposited(amount=1)], expected_version=0, uow=uow
    )
    with pytest.raises(ConcurrencyError) as caught:
        await uow.commit()

    assert caught.value.stream == "Account:a1"
    assert await backend.counts() == before


async def test_an_id_stored_in_another_stream_is_refused(backend: Backend) -> None:
    opened = Opened(owner="ann")
    await commit_open(backend, opened, "audit-1")
    before = await backend.counts()

    uow = backend.uow_factory()
    await backend.event_store.append("Account", "b2", [opened], expected_version=0, uow=uow)
    with pytest.raises(PersistenceError) as caught:
        await uow.commit()

    assert not isinstance(caught.value, ConcurrencyError)
    assert await backend.counts() == before


async def test_a_unit_of_work_without_events_is_not_recognised(backend: Backend) -> None:
    """Nothing identifies it: its second commit meets its own state row."""
    for attempt in range(2):
        uow = backend.uow_factory()
        backend.repository(Account).save(new_account("s1"), uow=uow)
        if attempt == 0:
            await uow.commit()
        else:
            with pytest.raises(ConcurrencyError):
                await uow.commit()

    assert (await backend.counts())["aggregate_state"] == 1
