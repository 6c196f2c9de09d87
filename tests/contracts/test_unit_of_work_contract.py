"""The unit of work contract, for every adapter (see conftest)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cqrs_ddd_core.exceptions import ConcurrencyError, UnitOfWorkError
from cqrs_ddd_core.persistence import AuditRecord, OutboxMessage
from tests.support.accounts import Account, Deposited, Opened
from tests.support.backends import Backend

NOW = datetime(2024, 1, 1, tzinfo=UTC)


def audit_record(audit_id: str) -> AuditRecord:
    return AuditRecord(
        audit_id=audit_id,
        message_id="cmd-1",
        message_type="Deposit",
        correlation_id="corr",
        causation_id=None,
        actor="ann",
        outcome="success",
        error_type=None,
        started_at=NOW,
        duration_ms=1.25,
        metadata={"tenant": "t1"},
    )


async def stage_everything(backend: Backend, uow: object, account_id: str) -> Account:
    account = Account.open(account_id, "ann")
    events = account.pending_events
    await backend.event_store.append(
        "Account", account_id, list(events), expected_version=0, uow=uow
    )
    await backend.outbox_store.enqueue(
        [OutboxMessage(e.event_id, e.type_name(), e.payload(), NOW) for e in events], uow=uow
    )
    backend.repository(Account).save(account, uow=uow)
    await backend.audit_store.stage(audit_record(f"audit-{account_id}"), uow)
    return account


async def test_everything_staged_commits_together(backend: Backend) -> None:
    uow = backend.uow_factory()
    await stage_everything(backend, uow, "a1")

    await uow.commit()

    assert await backend.counts() == {
        "events": 1,
        "outbox": 1,
        "audit_log": 1,
        "aggregate_state": 1,
    }
    assert not uow.is_open


async def test_one_conflict_leaves_nothing_of_any_store(backend: Backend) -> None:
    uow = backend.uow_factory()
    await stage_everything(backend, uow, "a1")
    await uow.commit()
    before = await backend.counts()

    uow = backend.uow_factory()
    await stage_everything(backend, uow, "b2")
    await backend.event_store.append(
        "Account", "a1", [Deposited(amount=1)], expected_version=0, uow=uow
    )
    with pytest.raises(ConcurrencyError):
        await uow.commit()

    assert await backend.counts() == before
    assert await backend.repository(Account).find("b2") is None


async def test_commit_measures_each_step(backend: Backend) -> None:
    uow = backend.uow_factory()
    await stage_everything(backend, uow, "a1")

    await uow.commit()

    by_collection = {t.collection: t for t in uow.timings}
    assert {"events", "outbox", "audit_log", "aggregate_state", None} <= set(by_collection)
    assert by_collection["events"].rows == 1
    assert any(t.operation == "COMMIT" for t in uow.timings)
    for timing in uow.timings:
        assert timing.start_ns <= timing.end_ns
        assert timing.error_type is None
        assert timing.system in ("memory", "sqlite", "postgresql")


async def test_a_failed_commit_measures_the_failing_step(backend: Backend) -> None:
    uow = backend.uow_factory()
    await backend.event_store.append(
        "Account", "a1", [Opened(owner="a")], expected_version=5, uow=uow
    )

    with pytest.raises(ConcurrencyError):
        await uow.commit()

    assert any(t.error_type == "cqrs_ddd_core.exceptions.ConcurrencyError" for t in uow.timings)
    assert uow.timings[-1].operation == "ROLLBACK"


async def test_an_empty_unit_of_work_commits(backend: Backend) -> None:
    uow = backend.uow_factory()
    await uow.commit()
    assert not uow.is_open
    with pytest.raises(UnitOfWorkError):
        uow.stage(backend.event_store, ("Account", "a1", 0, []))


async def test_hooks_run_after_commit_or_after_rollback(backend: Backend) -> None:
    ran: list[str] = []

    async def committed() -> None:
        ran.append("commit")

    async def rolled_back() -> None:
        ran.append("rollback")

    uow = backend.uow_factory()
    uow.after_commit(committed)
    uow.after_rollback(rolled_back)
    await stage_everything(backend, uow, "a1")
    await uow.commit()

    failing = backend.uow_factory()
    failing.after_commit(committed)
    failing.after_rollback(rolled_back)
    await backend.event_store.append(
        "Account", "a1", [Deposited(amount=1)], expected_version=0, uow=failing
    )
    with pytest.raises(ConcurrencyError):
        await failing.commit()

    assert ran == ["commit", "rollback"]


async def test_slots_keep_a_parent_command_s_events_first(backend: Backend) -> None:
    uow = backend.uow_factory()
    parent = uow.open_slot()
    child = uow.open_slot()
    # The child finishes first, but the parent reserved its place before it.
    await backend.event_store.append(
        "Account", "child", [Opened(owner="c")], expected_version=0, uow=_Into(uow, child)
    )
    await backend.event_store.append(
        "Account", "parent", [Opened(owner="p")], expected_version=0, uow=_Into(uow, parent)
    )
    await uow.commit()

    assert [e.aggregate_id for e in await backend.event_store.read_all()] == ["parent", "child"]


class _Into:
    """Stages into one slot (what the persistence middlewares hand the stores)."""

    def __init__(self, uow: object, slot: list) -> None:
        self._uow, self._slot = uow, slot

    def stage(self, writer: object, record: object, slot: list | None = None) -> None:
        self._uow.stage(writer, record, self._slot)  # type: ignore[attr-defined]
