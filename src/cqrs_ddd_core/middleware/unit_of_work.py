"""Open a unit of work around the command; commit on success, roll back on failure."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cqrs_ddd_core.pipeline.pipeline import CallNext, Placement

if TYPE_CHECKING:
    from cqrs_ddd_core.context import DispatchContext
    from cqrs_ddd_core.persistence.ports import UnitOfWorkFactory

__all__ = ["UnitOfWorkMiddleware"]


class UnitOfWorkMiddleware:
    """Runs everything inside it in one transaction.

    A nested command (sent from a handler) finds the parent's unit of work on
    its context and joins it: only the outermost dispatch commits. If the
    nested command fails, what it staged is discarded, so a parent that
    catches the error and carries on commits none of it. Any
    exception rolls the transaction back and propagates unchanged; a failure
    at commit rolls back too.
    """

    name = "unit_of_work"
    placement = Placement.of(provides=("unit_of_work",))

    __slots__ = ("_factory",)

    def __init__(self, uow_factory: UnitOfWorkFactory) -> None:
        if not callable(uow_factory):
            raise TypeError(f"uow_factory must be callable, got {uow_factory!r}")
        self._factory = uow_factory

    async def __call__(self, message: Any, context: DispatchContext, call_next: CallNext) -> Any:
        uow = context.uow
        if uow is not None:  # nested: the outermost dispatch owns the transaction
            mark = uow.savepoint()
            published = len(context.published)
            try:
                return await call_next(message, context)
            except BaseException:
                # Undo only this command's staged writes and events; the parent
                # decides whether its transaction goes on.
                if uow.is_open:
                    uow.rollback_to_savepoint(mark)
                del context.published[published:]
                raise
        uow = self._factory()
        context.uow = uow
        # Derived event ids are numbered per unit of work (see record_event): a
        # new attempt, in a new unit of work, numbers them from 1 again.
        context.ordinals = {}
        try:
            result = await call_next(message, context)
        except BaseException:
            await uow.rollback()
            raise
        await uow.commit()
        return result

    def __repr__(self) -> str:
        return f"UnitOfWorkMiddleware(uow_factory={self._factory!r})"
