"""A view of a unit of work whose ``stage()`` fills one reserved slot.

The store ports take ``uow=`` but no slot. A middleware that must keep its
writes in dispatch order reserves a slot (``uow.open_slot()``) before calling
the handler and, afterwards, hands the stores this view instead of the unit
of work itself: whatever they stage lands in the reserved slot, so a parent
command's records precede those of the commands its handler sent.

Every other attribute (``is_open``, hooks, an adapter's session...) is the
unit of work's own. Stores must not commit or roll back; the view refuses to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cqrs_ddd_core.exceptions import UnitOfWorkError

if TYPE_CHECKING:
    from cqrs_ddd_core.persistence.ports import AfterHook, UnitOfWork
    from cqrs_ddd_core.persistence.records import StepTiming

__all__ = ["SlotStaging"]

Slot = list[tuple[Any, Any]]


class SlotStaging:
    """``uow`` as seen by a store writing into ``slot``."""

    __slots__ = ("_slot", "_uow")

    def __init__(self, uow: UnitOfWork, slot: Slot) -> None:
        self._uow = uow
        self._slot = slot

    @property
    def timings(self) -> list[StepTiming]:
        return self._uow.timings

    @timings.setter
    def timings(self, value: list[StepTiming]) -> None:
        self._uow.timings = value

    @property
    def is_open(self) -> bool:
        return self._uow.is_open

    def open_slot(self) -> Slot:
        return self._uow.open_slot()

    def stage(self, writer: Any, record: Any, slot: Slot | None = None) -> None:
        self._uow.stage(writer, record, self._slot if slot is None else slot)

    def savepoint(self) -> int:
        return self._uow.savepoint()

    def rollback_to_savepoint(self, mark: int) -> None:
        self._uow.rollback_to_savepoint(mark)

    def after_commit(self, hook: AfterHook) -> None:
        self._uow.after_commit(hook)

    def after_rollback(self, hook: AfterHook) -> None:
        self._uow.after_rollback(hook)

    async def commit(self) -> None:
        raise UnitOfWorkError("A store must not commit: the unit of work owns the transaction")

    async def rollback(self) -> None:
        raise UnitOfWorkError("A store must not roll back: the unit of work owns the transaction")

    def __getattr__(self, name: str) -> Any:
        # Adapter-specific attributes (a SQL session, a connection) are the uow's.
        if name in SlotStaging.__slots__:  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self._uow, name)

    def __repr__(self) -> str:
        return f"SlotStaging({self._uow!r})"
