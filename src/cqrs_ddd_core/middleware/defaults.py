"""The pipelines a mediator builds when the team lists nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cqrs_ddd_core.middleware.unit_of_work import UnitOfWorkMiddleware
from cqrs_ddd_core.middleware.validation import ValidationMiddleware

if TYPE_CHECKING:
    from cqrs_ddd_core.persistence.ports import UnitOfWorkFactory
    from cqrs_ddd_core.pipeline.pipeline import Middleware

__all__ = ["default_command_middlewares", "default_query_middlewares"]


def default_command_middlewares(*, uow_factory: UnitOfWorkFactory | None) -> list[Middleware]:
    """validation -> unit_of_work (when there is a factory)."""
    middlewares: list[Middleware] = [ValidationMiddleware()]
    if uow_factory is not None:
        middlewares.append(UnitOfWorkMiddleware(uow_factory))
    return middlewares


def default_query_middlewares() -> list[Middleware]:
    """validation (queries open no unit of work by default)."""
    return [ValidationMiddleware()]
