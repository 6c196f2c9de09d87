"""Validate the message before any transaction opens."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from cqrs_ddd_core.exceptions import FieldError, MessageValidationError
from cqrs_ddd_core.pipeline.pipeline import CallNext, Placement

if TYPE_CHECKING:
    from cqrs_ddd_core.context import DispatchContext

__all__ = ["ValidationMiddleware", "Validator"]

Validator = Callable[[Any], Iterable[FieldError] | Awaitable[Iterable[FieldError]]]
"""Returns the field errors of a message (empty when valid); may be async."""


class ValidationMiddleware:
    """Re-validates the message's fields and runs the validators registered for its type.

    Args:
        validators: Per message type, the extra checks to run (sync or async),
            each returning the :class:`FieldError` s it found.
        revalidate: Run the message's pydantic validation again (catches
            messages built with ``model_construct`` or altered after creation).

    Raises:
        MessageValidationError: with every field error found; the handler is
            not called and, placed outside the unit of work, no transaction opens.
    """

    name = "validation"
    placement = Placement.of(outside=("unit_of_work",))

    __slots__ = ("_revalidate", "_validators")

    def __init__(
        self,
        *,
        validators: Mapping[type, Sequence[Validator]] | None = None,
        revalidate: bool = True,
    ) -> None:
        self._validators: dict[type, tuple[Validator, ...]] = {
            message_type: tuple(checks) for message_type, checks in (validators or {}).items()
        }
        self._revalidate = revalidate

    def __call__(
        self, message: Any, context: DispatchContext, call_next: CallNext
    ) -> Awaitable[Any]:
        # A plain function, not a coroutine: with no validator registered for
        # the type (nothing that may need awaiting), it hands the message on
        # (or raises) without a coroutine of its own.
        errors: list[FieldError] = []
        if self._revalidate:
            try:
                type(message).__pydantic_validator__.validate_python(message.__dict__)
            except ValidationError as exc:
                errors.extend(
                    FieldError(tuple(e["loc"]), e["msg"], e["type"]) for e in exc.errors()
                )
        checks = self._validators.get(type(message))
        if checks:
            return self._check(message, context, call_next, errors, checks)
        if errors:
            raise MessageValidationError(type(message), errors)
        return call_next(message, context)

    async def _check(
        self,
        message: Any,
        context: DispatchContext,
        call_next: CallNext,
        errors: list[FieldError],
        checks: tuple[Validator, ...],
    ) -> Any:
        for check in checks:
            found = check(message)
            # Awaitable-ness is checked on the result, not guessed from the callable:
            # an object with ``async def __call__`` is not a coroutine function.
            if inspect.isawaitable(found):
                found = await found
            errors.extend(found)
        if errors:
            raise MessageValidationError(type(message), errors)
        return await call_next(message, context)

    def __repr__(self) -> str:
        types = ", ".join(sorted(t.__qualname__ for t in self._validators))
        return f"ValidationMiddleware(revalidate={self._revalidate}, validators=[{types}])"
