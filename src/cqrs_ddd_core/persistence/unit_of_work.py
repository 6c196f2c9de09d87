"""The shared mechanics of a unit of work: staging, ordering, hooks.

Adapters subclass :class:`BaseUnitOfWork` and implement ``_write_and_commit``
(write every staged group, then commit, as one step where the backend allows)
and ``_discard``.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import structlog

from cqrs_ddd_core.context import _current
from cqrs_ddd_core.exceptions import UnitOfWorkError
from cqrs_ddd_core.persistence.ports import AfterHook
from cqrs_ddd_core.persistence.records import StepTiming
from cqrs_ddd_core.persistence.steps import failed_steps, rollback_step
from cqrs_ddd_core.telemetry.api import error_type

__all__ = ["BaseUnitOfWork", "StagedGroup", "require_uow"]

_log = structlog.get_logger("cqrs_ddd_core.unit_of_work")

StagedGroup = tuple[Any, list[Any]]
"""A writer and its records, in the order they were staged."""


class BaseUnitOfWork(ABC):
    """Staged writes that commit together, plus after-commit/rollback hooks.

    Attributes:
        timings: The steps measured at commit (``StepTiming``), success or not;
            a failed commit ends with a ``ROLLBACK`` step.
        committed: After a successful commit, what it wrote: each writer with
            its records (``staged_groups()`` as it was), so that metrics can
            count what was really stored (see
            :func:`~cqrs_ddd_core.persistence.steps.written_by_aggregate_type`).
    """

    system: ClassVar[str] = "unknown"

    def __init__(self) -> None:
        self._slots: list[list[tuple[Any, Any]]] = []
        self._after_commit: list[AfterHook] = []
        self._after_rollback: list[AfterHook] = []
        self._state = "open"
        self.timings: list[StepTiming] = []
        self.committed: list[StagedGroup] = []

    # -- staging -----------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._state == "open"

    def _check_open(self) -> None:
        if self._state != "open":
            raise UnitOfWorkError(f"This unit of work is already {self._state}")

    def open_slot(self) -> list[tuple[Any, Any]]:
        self._check_open()
        slot: list[tuple[Any, Any]] = []
        self._slots.append(slot)
        return slot

    def savepoint(self) -> int:
        """A mark to return to with :meth:`rollback_to_savepoint`."""
        self._check_open()
        return len(self._slots)

    def rollback_to_savepoint(self, mark: int) -> None:
        """Forget everything staged in slots opened since ``mark``.

        A nested command that fails inside its parent's unit of work undoes its
        own writes this way, so a parent that catches the failure and commits
        does not commit half of the nested command. Writes are staged until
        commit, so this needs no database savepoint.
        """
        self._check_open()
        for slot in self._slots[mark:]:
            slot.clear()  # a middleware may still hold the slot; leave it empty
        del self._slots[mark:]

    def stage(self, writer: Any, record: Any, slot: list[tuple[Any, Any]] | None = None) -> None:
        self._check_open()
        if slot is None:
            self._slots.append([(writer, record)])
        else:
            slot.append((writer, record))

    @property
    def has_staged(self) -> bool:
        return any(self._slots)

    def staged_groups(self) -> list[StagedGroup]:
        """Staged records grouped by writer, writers in order of first use.

        Within a writer, records keep the order of their slots, so a parent
        command's events precede those of the commands it caused.
        """
        groups: dict[int, StagedGroup] = {}
        for slot in self._slots:
            for writer, record in slot:
                group = groups.get(id(writer))
                if group is None:
                    groups[id(writer)] = (writer, [record])
                else:
                    group[1].append(record)
        return list(groups.values())

    # -- hooks -------------------------------------------------------------

    def after_commit(self, hook: AfterHook) -> None:
        self._check_open()
        self._after_commit.append(hook)

    def after_rollback(self, hook: AfterHook) -> None:
        self._check_open()
        self._after_rollback.append(hook)

    async def _run_hooks(self, hooks: list[AfterHook], phase: str) -> None:
        for hook in hooks:
            try:
                await hook()
            except Exception as exc:  # a hook must not undo what already happened
                _log.error(
                    "unit_of_work_hook_failed",
                    phase=phase,
                    error_type=error_type(exc),
                    exc_info=exc,
                )

    # -- ending ------------------------------------------------------------

    async def commit(self) -> None:
        self._check_open()
        groups = self.staged_groups()
        try:
            await self._write_and_commit(groups)
        except BaseException as exc:
            failed_steps(self.timings, exc)
            started = time.time_ns()
            await self.rollback()
            rollback_step(self.timings, started)
            raise
        self._state = "committed"
        self.committed = groups
        self._slots.clear()
        hooks, self._after_commit, self._after_rollback = self._after_commit, [], []
        if hooks:
            await self._run_hooks(hooks, "after_commit")

    async def rollback(self) -> None:
        if self._state != "open":
            return
        self._state = "rolled_back"
        self._slots.clear()
        try:
            await self._discard()
        finally:
            hooks, self._after_commit, self._after_rollback = self._after_rollback, [], []
            await self._run_hooks(hooks, "after_rollback")

    async def __aenter__(self) -> BaseUnitOfWork:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is not None or self._state == "open":
            # Leaving the block without commit() means nothing is kept.
            await self.rollback()

    @abstractmethod
    async def _write_and_commit(self, groups: list[StagedGroup]) -> None:
        """Write the staged groups and commit; raise to abort everything."""

    @abstractmethod
    async def _discard(self) -> None:
        """Release the transaction without keeping anything."""


def require_uow(uow: Any | None, what: str) -> Any:
    """``uow`` if given, else the running dispatch's; raise if there is none.

    Stores call this so a write can never happen outside a transaction.
    """
    if uow is None:
        # (Inlined current_uow(): stores ask on every write.)
        context = _current.get()
        uow = None if context is None else context.uow
    if uow is None:
        raise UnitOfWorkError(
            f"{what} needs a unit of work: pass uow=..., or dispatch through a pipeline "
            "that lists UnitOfWorkMiddleware before the step that writes"
        )
    return uow
