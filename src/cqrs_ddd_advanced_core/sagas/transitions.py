"""The transitions of a saga: the handlers of the saga manager's internal commands.

Each runs inside the dispatch of its command, so inside that dispatch's unit
of work: it loads the saga, sends the step's command (a nested dispatch that
joins the unit of work), and stages the saga's new state with the version it
was loaded at. A refused step's writes are rolled back to before it (the
unit-of-work middleware's savepoint) and the saga turns to compensating in
the same commit. A storage failure under a step (a ``PersistenceError``
other than ``RecordNotFoundError``) is not a refusal: it aborts the
transition, and the step is tried again later.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cqrs_ddd_advanced_core.domain.exceptions import SagaDefinitionError, SagaNotFoundError
from cqrs_ddd_advanced_core.sagas import commands as c
from cqrs_ddd_advanced_core.sagas import telemetry as t
from cqrs_ddd_advanced_core.sagas.state import SagaState, SagaStatus, saga_id_for
from cqrs_ddd_advanced_core.sagas.telemetry import StepSpan
from cqrs_ddd_core.context import current_uow
from cqrs_ddd_core.exceptions import PersistenceError, RecordNotFoundError
from cqrs_ddd_core.telemetry.api import error_type

if TYPE_CHECKING:
    from cqrs_ddd_advanced_core.sagas.definition import SagaDefinition
    from cqrs_ddd_advanced_core.sagas.ports import SagaStore
    from cqrs_ddd_core.cqrs.mediator import Mediator

__all__ = ["SagaTransitions"]


class SagaTransitions:
    """The command handlers :class:`~cqrs_ddd_advanced_core.sagas.SagaManager` registers.

    Each returns a bool (the command's result): whether the saga changed, or
    for :meth:`advance`, whether more work is ready.

    Args:
        mediator: Sends the steps' commands (nested: they join the unit of work).
        store: Where saga states live.
        definitions: The definitions by name.
        clock: The current time.
        telemetry: The saga instruments and tracer.
    """

    def __init__(
        self,
        mediator: Mediator,
        store: SagaStore,
        definitions: dict[str, SagaDefinition[Any]],
        clock: Callable[[], datetime],
        telemetry: t.SagaTelemetry,
    ) -> None:
        self.mediator = mediator
        self.store = store
        self._definitions = definitions
        self.clock = clock
        self.telemetry = telemetry

    def _definition(self, state: SagaState) -> SagaDefinition[Any]:
        definition = self._definitions.get(state.saga_type)
        if definition is None:
            raise SagaDefinitionError(state.saga_type, "no definition of this saga is registered")
        return definition

    async def _load(self, saga_id: str) -> SagaState:
        state = await self.store.find(saga_id)
        if state is None:
            raise SagaNotFoundError(saga_id)
        return state

    def _save(self, old: SagaState | None, new: SagaState) -> None:
        expected = 0 if old is None else old.version
        new.version = expected + 1
        new.updated_at = self.clock()
        self.store.save(new, expected_version=expected)
        if old is not None and old.status == new.status:
            return
        counter = {
            SagaStatus.RUNNING: self.telemetry.started,
            SagaStatus.COMPLETED: self.telemetry.completed,
            SagaStatus.COMPENSATED: self.telemetry.compensated,
            SagaStatus.FAILED: self.telemetry.failed,
        }.get(new.status)
        uow = current_uow()
        if counter is not None and uow is not None and (old is None or new.status != "running"):
            attributes = {t.ATTR_SAGA_TYPE: new.saga_type}

            async def count() -> None:
                counter.add(1, attributes)

            uow.after_commit(count)

    async def start(self, command: c.StartSaga) -> bool:
        """Create the saga a starting event names; False if it exists already."""
        definition = self._definitions.get(command.saga_type)
        if definition is None:
            raise SagaDefinitionError(command.saga_type, "no definition of this saga is registered")
        event = command.event
        key = definition.start_key(event)
        saga_id = saga_id_for(definition.name, key)
        if await self.store.find(saga_id) is not None:
            return False  # started already (a redelivery, or a second start)
        with StepSpan(self.telemetry, saga_id, definition.name, "start", "start"):
            data = definition.start_data(event)
            state = SagaState(
                saga_id=saga_id,
                saga_type=definition.name,
                key=key,
                data=data.model_dump(mode="json"),
                processed_event_ids=[event.event_id],
                correlation_id=event.correlation_id,
                created_at=self.clock(),
            )
            self._save(None, state)
        return True

    async def advance(self, command: c.AdvanceSaga) -> bool:
        """Run the saga's next transition (a step or a compensation) and store it;
        True if more work is ready."""
        old = await self._load(command.saga_id)
        if old.status == SagaStatus.RUNNING and not old.waiting:
            return await self._run_step(old)
        if old.status == SagaStatus.COMPENSATING:
            return await self._compensate_one(old)
        return False

    async def _run_step(self, old: SagaState) -> bool:
        definition = self._definition(old)
        step = definition.steps[old.step]
        new = old.model_copy(deep=True)
        with StepSpan(self.telemetry, old.saga_id, old.saga_type, step.name, "run") as span:
            data = definition.load_data(old.data)
            try:
                response = await self.mediator.send(step.send(data))
            except Exception as exc:  # the step is refused: its writes were rolled back
                _reraise_if_transient(exc)
                span.set_attribute("error.type", error_type(exc))
                new.status = SagaStatus.COMPENSATING
                new.error = f"step {step.name!r} refused: {type(exc).__name__}: {exc}"
                self._save(old, new)
                return True
            if step.on_result is not None:
                data = step.on_result(data, response.result)
            new.data = data.model_dump(mode="json")
            new.started_steps.append(step.name)
            if step.awaits:
                new.waiting = True
                if step.timeout is not None:
                    new.deadline_at = self.clock() + step.timeout
            else:
                self._complete_step(new, step.name, len(definition.steps))
            self._save(old, new)
        return new.status == SagaStatus.RUNNING and not new.waiting

    @staticmethod
    def _complete_step(new: SagaState, name: str, steps: int) -> None:
        new.completed_steps.append(name)
        new.step += 1
        new.waiting = False
        new.deadline_at = None
        if new.step >= steps:
            new.status = SagaStatus.COMPLETED

    async def _compensate_one(self, old: SagaState) -> bool:
        definition = self._definition(old)
        pending = [
            name
            for name in reversed(old.started_steps)
            if name not in old.compensated_steps
            and definition.step_named(name).compensate is not None
        ]
        new = old.model_copy(deep=True)
        new.waiting, new.deadline_at = False, None
        if not pending:
            new.status = SagaStatus.COMPENSATED
            self._save(old, new)
            return False
        step = definition.step_named(pending[0])
        compensate = step.compensate
        if compensate is None:  # pragma: no cover - filtered above
            return False
        with StepSpan(self.telemetry, old.saga_id, old.saga_type, step.name, "compensate") as span:
            try:
                await self.mediator.send(compensate(definition.load_data(old.data)))
            except Exception as exc:
                _reraise_if_transient(exc)
                span.set_attribute("error.type", error_type(exc))
                new.status = SagaStatus.FAILED
                new.error = f"compensation of {step.name!r} failed: {type(exc).__name__}: {exc}"
                self._save(old, new)
                return False
            new.compensated_steps.append(step.name)
            self._save(old, new)
        return True

    async def deliver(self, command: c.DeliverSagaEvent) -> bool:
        """Record an awaited event on its saga; False if there is no such saga,
        it handled the event already or does not wait for it now."""
        old = await self.store.find(command.saga_id)
        event = command.event
        if old is None or old.has_processed(event.event_id):
            return False  # no such saga (yet), or a redelivery: nothing changes
        if old.status != SagaStatus.RUNNING or not old.waiting:
            return False  # not awaited now (late or early): nothing changes
        definition = self._definition(old)
        step = definition.steps[old.step]
        new = old.model_copy(deep=True)
        with StepSpan(self.telemetry, old.saga_id, old.saga_type, step.name, "event"):
            if type(event) in step.wait_for:
                if step.on_event is not None:
                    data = step.on_event(definition.load_data(old.data), event)
                    new.data = data.model_dump(mode="json")
                self._complete_step(new, step.name, len(definition.steps))
            elif type(event) in step.fail_on:
                new.status = SagaStatus.COMPENSATING
                new.waiting, new.deadline_at = False, None
                new.error = f"step {step.name!r} failed: {type(event).__name__}"
            else:
                return False
            new.processed_event_ids.append(event.event_id)
            self._save(old, new)
        return True

    async def timeout(self, command: c.FireSagaTimeout) -> bool:
        """Fire a stored deadline that is due; False if the step moved on
        meanwhile or the deadline is not due."""
        old = await self.store.find(command.saga_id)
        if (
            old is None
            or old.status != SagaStatus.RUNNING
            or not old.waiting
            or old.deadline_at != command.deadline_at
            or command.deadline_at > self.clock()
        ):
            return False  # the step moved on meanwhile, or it is not due
        step = self._definition(old).steps[old.step]
        new = old.model_copy(deep=True)
        with StepSpan(self.telemetry, old.saga_id, old.saga_type, step.name, "timeout"):
            new.status = SagaStatus.COMPENSATING
            new.waiting, new.deadline_at = False, None
            new.error = f"step {step.name!r} timed out at {command.deadline_at.isoformat()}"
            self._save(old, new)
        return True

    async def resume(self, command: c.ResumeSaga) -> bool:
        """Set a failed saga compensating again (its remaining compensations run
        next); False if it has not failed."""
        old = await self._load(command.saga_id)
        if old.status != SagaStatus.FAILED:
            return False
        new = old.model_copy(deep=True)
        new.status = SagaStatus.COMPENSATING
        with StepSpan(self.telemetry, old.saga_id, old.saga_type, "-", "resume"):
            self._save(old, new)
        return True


def _reraise_if_transient(exc: Exception) -> None:
    """Let a storage failure abort the transition instead of deciding the saga's fate.

    A command refused by its handler (any error but a ``PersistenceError``, or a
    ``RecordNotFoundError``) fails the step. The database failing under it
    (unreachable, a conflict, a commit in doubt) says nothing about the step:
    the transition rolls back, the saga stays where it was, and the next run
    (the retry, or recovery) tries the step again.
    """
    if isinstance(exc, PersistenceError) and not isinstance(exc, RecordNotFoundError):
        raise exc
