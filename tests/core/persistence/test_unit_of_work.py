"""BaseUnitOfWork: staging order, hooks, and the end of a transaction."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from structlog.testing import capture_logs

from cqrs_ddd_core.adapters.memory import InMemoryUnitOfWork
from cqrs_ddd_core.exceptions import UnitOfWorkError
from cqrs_ddd_core.persistence import require_uow
from cqrs_ddd_core.persistence.unit_of_work import BaseUnitOfWork, StagedGroup


class Writer:
    """A store that records what it was asked to write, or refuses."""

    operation = "INSERT"

    def __init__(self, collection: str, written: list[tuple[str, Any]], fail: bool = False):
        self.collection = collection
        self.written = written
        self.fail = fail

    def prepare(self, records: list[Any]) -> Callable[[], None]:
        if self.fail:
            raise ValueError(f"{self.collection} refuses")
        return lambda: self.written.extend((self.collection, r) for r in records)


class RecordingUnitOfWork(BaseUnitOfWork):
    """Keeps the groups it was asked to write, to check their order."""

    system = "test"

    def __init__(self) -> None:
        super().__init__()
        self.flushed: list[StagedGroup] = []
        self.discarded = 0

    async def _write_and_commit(self, groups: list[StagedGroup]) -> None:
        self.flushed = groups

    async def _discard(self) -> None:
        self.discarded += 1


async def test_records_are_flushed_grouped_by_writer_in_the_order_of_their_slots() -> None:
    uow = RecordingUnitOfWork()
    events, outbox = object(), object()
    parent = uow.open_slot()  # reserved before the child command ran...
    uow.stage(events, "child-event")  # ...which staged first
    uow.stage(outbox, "child-message")
    uow.stage(events, "parent-event-1", parent)
    uow.stage(events, "parent-event-2", parent)

    await uow.commit()

    assert uow.flushed == [
        (events, ["parent-event-1", "parent-event-2", "child-event"]),
        (outbox, ["child-message"]),
    ]


async def test_after_commit_hooks_run_once_committed_and_rollback_hooks_are_dropped() -> None:
    uow = RecordingUnitOfWork()
    ran: list[str] = []

    async def on_commit() -> None:
        ran.append(f"commit hook, open={uow.is_open}")

    async def on_rollback() -> None:
        ran.append("rollback hook")

    uow.after_commit(on_commit)
    uow.after_rollback(on_rollback)
    await uow.commit()
    await uow.rollback()  # a no-op once committed

    assert ran == ["commit hook, open=False"]
    assert uow.discarded == 0


async def test_after_rollback_hooks_run_on_rollback_and_commit_hooks_are_dropped() -> None:
    uow = RecordingUnitOfWork()
    ran: list[str] = []

    async def on_commit() -> None:
        ran.append("commit hook")

    async def on_rollback() -> None:
        ran.append("rollback hook")

    uow.after_commit(on_commit)
    uow.after_rollback(on_rollback)
    uow.stage(object(), "record")
    await uow.rollback()
    await uow.rollback()

    assert ran == ["rollback hook"]
    assert uow.discarded == 1
    assert not uow.has_staged


async def test_a_failing_hook_is_logged_and_does_not_undo_the_commit() -> None:
    uow = RecordingUnitOfWork()
    ran: list[str] = []

    async def broken() -> None:
        raise RuntimeError("hook bug")

    async def fine() -> None:
        ran.append("fine")

    uow.after_commit(broken)
    uow.after_commit(fine)
    with capture_logs() as logs:
        await uow.commit()

    assert ran == ["fine"]
    assert not uow.is_open
    assert [(e["event"], e["phase"], e["error_type"]) for e in logs] == [
        ("unit_of_work_hook_failed", "after_commit", "RuntimeError")
    ]


async def test_a_failure_while_writing_rolls_back_runs_rollback_hooks_and_raises() -> None:
    written: list[tuple[str, Any]] = []
    uow = InMemoryUnitOfWork()
    ran: list[str] = []

    async def on_rollback() -> None:
        ran.append("rollback hook")

    uow.stage(Writer("events", written), "e1")
    uow.stage(Writer("outbox", written, fail=True), "m1")
    uow.after_rollback(on_rollback)

    with pytest.raises(ValueError, match="outbox refuses"):
        await uow.commit()

    assert written == []
    assert ran == ["rollback hook"]
    assert [(t.collection, t.error_type) for t in uow.timings] == [
        ("events", None),
        ("outbox", "ValueError"),
        (None, None),
    ]
    assert [t.operation for t in uow.timings][-1] == "ROLLBACK"
    assert uow.timings[1].rows == 0  # the failed step kept nothing


async def test_nothing_can_be_staged_or_committed_once_the_unit_of_work_has_ended() -> None:
    uow = RecordingUnitOfWork()
    await uow.commit()

    with pytest.raises(UnitOfWorkError, match="already committed"):
        uow.stage(object(), "late")
    with pytest.raises(UnitOfWorkError, match="already committed"):
        await uow.commit()
    with pytest.raises(UnitOfWorkError):
        uow.open_slot()

    async def hook() -> None: ...

    with pytest.raises(UnitOfWorkError):
        uow.after_commit(hook)


async def test_leaving_an_async_with_block_without_commit_keeps_nothing() -> None:
    written: list[tuple[str, Any]] = []

    async with InMemoryUnitOfWork() as uow:
        uow.stage(Writer("events", written), "e1")

    assert not uow.is_open
    assert written == []

    failing = InMemoryUnitOfWork()

    async def fail_inside_the_block() -> None:
        async with failing:
            failing.stage(Writer("events", written), "e2")
            raise KeyError("boom")

    with pytest.raises(KeyError):
        await fail_inside_the_block()

    assert written == []
    assert not failing.is_open

    async with InMemoryUnitOfWork() as committed:
        committed.stage(Writer("events", written), "e3")
        await committed.commit()

    assert written == [("events", "e3")]


def test_require_uow_refuses_to_write_outside_a_transaction() -> None:
    uow = InMemoryUnitOfWork()

    assert require_uow(uow, "test") is uow
    with pytest.raises(UnitOfWorkError, match=r"InMemoryEventStore\.append needs a unit of work"):
        require_uow(None, "InMemoryEventStore.append")


# -- found by mutation testing (docs/mutation.md) ------------------------------------


async def test_a_failing_after_rollback_hook_is_logged_with_its_phase_and_traceback() -> None:
    uow = InMemoryUnitOfWork()
    boom = RuntimeError("hook failed")

    async def failing() -> None:
        raise boom

    uow.after_rollback(failing)
    with capture_logs() as logs:
        await uow.rollback()

    [entry] = [e for e in logs if e["event"] == "unit_of_work_hook_failed"]
    assert (entry["phase"], entry["error_type"], entry["exc_info"]) == (
        "after_rollback",
        "RuntimeError",
        boom,
    )


async def test_using_a_rolled_back_unit_of_work_says_it_is_rolled_back() -> None:
    uow = InMemoryUnitOfWork()
    await uow.rollback()

    with pytest.raises(UnitOfWorkError, match="already rolled_back"):
        uow.open_slot()


def test_a_write_without_a_unit_of_work_says_how_to_get_one() -> None:
    with pytest.raises(UnitOfWorkError) as caught:
        require_uow(None, "Store.write")

    assert str(caught.value) == (
        "Store.write needs a unit of work: pass uow=..., or dispatch through a pipeline "
        "that lists UnitOfWorkMiddleware before the step that writes"
    )
