"""The audit middleware: who/what/when/outcome, and where it is listed matters."""

from __future__ import annotations

import contextlib

import pytest

from cqrs_ddd_advanced_core import (
    AuditMiddleware,
    EventPersistenceMiddleware,
    EventSourcedPersistenceOrchestrator,
)
from cqrs_ddd_core.adapters.memory import InMemoryAuditStore
from cqrs_ddd_core.cqrs import CommandResponse, Mediator
from cqrs_ddd_core.domain import Command
from cqrs_ddd_core.exceptions import ConcurrencyError, FieldError, MessageValidationError
from cqrs_ddd_core.middleware import UnitOfWorkMiddleware, ValidationMiddleware
from cqrs_ddd_core.persistence import AuditRecord
from cqrs_ddd_core.pipeline import Middleware
from tests.advanced.domain import Order, PlaceOrder, World


def positive_total(command: PlaceOrder) -> list[FieldError]:
    return [] if command.total > 0 else [FieldError(("total",), "must be positive")]


def persistence(world: World) -> EventPersistenceMiddleware:
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=world.events)
    orchestrator.register_event_sourced_type(Order)
    return EventPersistenceMiddleware(orchestrator=orchestrator)


def mediator(world: World, middlewares: list[Middleware]) -> Mediator:
    world.mediator = Mediator(world.registry, world.uow_factory, middlewares=middlewares)
    return world.mediator


def audit(world: World) -> AuditMiddleware:
    return AuditMiddleware(audit_store=world.audit)


def validation() -> ValidationMiddleware:
    return ValidationMiddleware(validators={PlaceOrder: [positive_total]})


class WatchingAuditStore(InMemoryAuditStore):
    """Notes whether any unit of work was still open when a record was written."""

    def __init__(self, world: World) -> None:
        super().__init__()
        self.world = world
        self.written_while_open: list[bool] = []

    async def write(self, record: AuditRecord) -> None:
        self.written_while_open.append(any(uow.is_open for uow in self.world.uows))
        await super().write(record)


async def test_a_successful_command_is_audited_in_its_own_transaction(world: World) -> None:
    m = mediator(world, [UnitOfWorkMiddleware(world.uow_factory), persistence(world), audit(world)])

    response = await m.send(PlaceOrder(order_id="o-1"), metadata={"actor": "alice"})

    [record] = await world.audit.list_records()
    assert record.outcome == "success"
    assert record.actor == "alice"
    assert record.message_type == "PlaceOrder"
    assert record.message_id == response.causation_id
    assert record.correlation_id == response.correlation_id
    assert record.error_type is None
    assert record.duration_ms >= 0
    # It was staged with the command's writes, not written on its own.
    assert any(t.collection == "audit_log" for t in world.uows[0].timings)


async def test_a_failed_command_is_audited_after_the_rollback_and_the_error_propagates(
    world: World,
) -> None:
    world.audit = store = WatchingAuditStore(world)
    world.failing.add(PlaceOrder)
    m = mediator(world, [UnitOfWorkMiddleware(world.uow_factory), persistence(world), audit(world)])

    with pytest.raises(RuntimeError, match="PlaceOrder failed"):
        await m.send(PlaceOrder(order_id="o-1"), metadata={"actor": "bob"})

    [record] = await store.list_records()
    assert (record.outcome, record.error_type, record.actor) == ("error", "RuntimeError", "bob")
    assert store.written_while_open == [False]  # never inside the doomed transaction
    assert await world.events.latest_position() == 0


async def test_a_success_whose_commit_fails_is_recorded_as_rolled_back(world: World) -> None:
    m = mediator(world, [UnitOfWorkMiddleware(world.uow_factory), persistence(world), audit(world)])
    await m.send(PlaceOrder(order_id="o-1"))

    with pytest.raises(ConcurrencyError):
        await m.send(PlaceOrder(order_id="o-1"))  # version 1 again: conflicts at commit

    records = await world.audit.list_records()
    assert [r.outcome for r in records] == ["success", "rolled_back"]
    assert records[1].message_id != records[0].message_id


async def test_a_nested_failure_caught_by_its_parent_is_still_audited(world: World) -> None:
    class Parent(Command[None]):
        pass

    async def parent(command: Parent) -> CommandResponse[None]:
        assert world.mediator is not None
        with contextlib.suppress(RuntimeError):  # the parent carries on and commits
            await world.mediator.send(PlaceOrder(order_id="o-1"))
        return CommandResponse(None)

    world.registry.register_command_handler(Parent, parent)
    world.failing.add(PlaceOrder)
    m = mediator(world, [UnitOfWorkMiddleware(world.uow_factory), audit(world)])

    await m.send(Parent())

    records = await world.audit.list_records()
    assert sorted((r.message_type, r.outcome) for r in records) == [
        ("Parent", "success"),
        ("PlaceOrder", "error"),
    ]


async def test_outside_the_unit_of_work_the_audit_sees_the_commits_outcome(world: World) -> None:
    m = mediator(world, [audit(world), UnitOfWorkMiddleware(world.uow_factory), persistence(world)])
    await m.send(PlaceOrder(order_id="o-1"))

    with pytest.raises(ConcurrencyError):
        await m.send(PlaceOrder(order_id="o-1"))

    records = await world.audit.list_records()
    assert [(r.outcome, r.error_type) for r in records] == [
        ("success", None),
        ("error", "ConcurrencyError"),
    ]


async def test_listed_outside_validation_the_audit_sees_rejected_commands(world: World) -> None:
    m = mediator(world, [audit(world), validation(), UnitOfWorkMiddleware(world.uow_factory)])

    with pytest.raises(MessageValidationError):
        await m.send(PlaceOrder(order_id="o-1", total=0), metadata={"actor": "eve"})

    [record] = await world.audit.list_records()
    assert (record.outcome, record.error_type, record.actor) == (
        "error",
        "MessageValidationError",
        "eve",
    )
    assert world.uows == []  # no transaction was opened


async def test_listed_inside_the_unit_of_work_the_audit_never_sees_rejected_commands(
    world: World,
) -> None:
    m = mediator(world, [validation(), UnitOfWorkMiddleware(world.uow_factory), audit(world)])

    with pytest.raises(MessageValidationError):
        await m.send(PlaceOrder(order_id="o-1", total=0))
    await m.send(PlaceOrder(order_id="o-2"))

    records = await world.audit.list_records()
    assert [(r.message_type, r.outcome) for r in records] == [("PlaceOrder", "success")]


async def test_a_failing_audit_write_never_replaces_the_commands_error(world: World) -> None:
    class BrokenAuditStore(InMemoryAuditStore):
        async def write(self, record: AuditRecord) -> None:
            raise OSError("audit database down")

    world.audit = BrokenAuditStore()
    world.failing.add(PlaceOrder)
    m = mediator(world, [audit(world), UnitOfWorkMiddleware(world.uow_factory)])

    with pytest.raises(RuntimeError, match="PlaceOrder failed"):
        await m.send(PlaceOrder(order_id="o-1"))


def test_audit_config_is_validated_and_shown() -> None:
    store = InMemoryAuditStore()
    with pytest.raises(TypeError):
        AuditMiddleware(audit_store=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="actor_key"):
        AuditMiddleware(audit_store=store, actor_key="")
    assert "actor_key='user'" in repr(AuditMiddleware(audit_store=store, actor_key="user"))
