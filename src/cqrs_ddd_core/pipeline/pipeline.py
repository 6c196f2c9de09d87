"""The middleware pipeline: listed once, checked, built once, then frozen.

Order is list order: the first middleware listed is the outermost, so it sees
the message first and the result last::

    Pipeline([tracing, logging, uow], terminal)
    tracing.before -> logging.before -> uow.before -> handler
                   <- logging.after  <- uow.after  <-

``call_next`` is awaited in the caller's task, never scheduled in another one,
so context variables (OpenTelemetry context, structlog context) flow through.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from cqrs_ddd_core.exceptions import PipelineConfigurationError, PipelineFrozenError

if TYPE_CHECKING:
    from cqrs_ddd_core.context import DispatchContext

__all__ = [
    "CallNext",
    "Middleware",
    "Pipeline",
    "Placement",
    "middleware_name",
    "placement",
]

CallNext = Callable[[Any, "DispatchContext"], Awaitable[Any]]
"""The rest of the pipeline: ``await call_next(message, context)``."""

F = TypeVar("F")


class Middleware(Protocol):
    """Anything callable as ``await mw(message, context, call_next)``.

    A plain ``async def`` function qualifies. A middleware may short-circuit by
    returning without calling ``call_next``, or by raising a typed error.
    Optional attributes: ``name`` (shown by :meth:`Pipeline.describe`) and
    ``placement`` (a :class:`Placement`).
    """

    def __call__(
        self, message: Any, context: DispatchContext, call_next: CallNext, /
    ) -> Awaitable[Any]: ...


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a middleware may stand, in terms of named capabilities.

    Attributes:
        provides: Capabilities this middleware gives the ones inside it
            (e.g. ``"unit_of_work"``).
        inside: Capabilities that must be provided by a middleware listed
            *before* this one (it runs inside them).
        outside: Capabilities whose providers must all be listed *after* this
            one (it wraps them), e.g. validation wraps the unit of work so it
            runs before any transaction opens.
    """

    provides: frozenset[str] = frozenset()
    inside: frozenset[str] = frozenset()
    outside: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls,
        *,
        provides: Iterable[str] = (),
        inside: Iterable[str] = (),
        outside: Iterable[str] = (),
    ) -> Placement:
        """A placement from any iterables of capability names."""
        return cls(frozenset(provides), frozenset(inside), frozenset(outside))


_NO_PLACEMENT = Placement()


def placement(
    *,
    name: str | None = None,
    provides: Iterable[str] = (),
    inside: Iterable[str] = (),
    outside: Iterable[str] = (),
) -> Callable[[F], F]:
    """Give a function middleware a name and placement constraints."""

    def mark(fn: F) -> F:
        fn.placement = Placement.of(provides=provides, inside=inside, outside=outside)  # type: ignore[attr-defined]
        if name is not None:
            fn.name = name  # type: ignore[attr-defined]
        return fn

    return mark


def middleware_name(mw: object) -> str:
    """The name shown for ``mw`` in orders and error messages."""
    name = getattr(mw, "name", None)
    if isinstance(name, str) and name:
        return name
    return getattr(mw, "__name__", None) or type(mw).__name__


def _placement_of(mw: object) -> Placement:
    found = getattr(mw, "placement", None)
    return found if isinstance(found, Placement) else _NO_PLACEMENT


def _check_order(middlewares: Sequence[object], kind: str) -> None:
    names = [middleware_name(m) for m in middlewares]
    shown = " -> ".join([*names, "handler"])
    provided_at: dict[str, list[int]] = {}
    for index, mw in enumerate(middlewares):
        for capability in _placement_of(mw).provides:
            provided_at.setdefault(capability, []).append(index)
    for index, mw in enumerate(middlewares):
        rule = _placement_of(mw)
        for capability in sorted(rule.inside):
            if not any(i < index for i in provided_at.get(capability, ())):
                raise PipelineConfigurationError(
                    f"{names[index]} must run inside {capability!r}: list a middleware that "
                    f"provides it before {names[index]}. The {kind} pipeline's order is: {shown}",
                    order=names,
                    offender=names[index],
                )
        for capability in sorted(rule.outside):
            if any(i < index for i in provided_at.get(capability, ())):
                raise PipelineConfigurationError(
                    f"{names[index]} must run outside {capability!r}: list it before every "
                    f"middleware that provides {capability!r}. The {kind} pipeline's order is: "
                    f"{shown}",
                    order=names,
                    offender=names[index],
                )


def _call_next_is_keyword_only(mw: object) -> bool:
    try:
        params = list(inspect.signature(mw).parameters.values())  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return (
        len(params) == 3
        and params[2].name == "call_next"
        and params[2].kind == params[2].KEYWORD_ONLY
    )


def _python_call(mw: object) -> tuple[types.FunctionType, object | None] | None:
    """The Python function behind ``mw(...)`` and the object bound to it, if any.

    A plain function: itself, nothing bound. A bound method: its function and
    ``__self__``. An instance whose class defines ``__call__`` as a plain
    function (not a static or class method): that function and the instance.
    Anything else (a C callable, a ``functools.partial``...): ``None``.
    """
    if isinstance(mw, types.FunctionType):
        return mw, None
    if isinstance(mw, types.MethodType):
        func = mw.__func__
        return (func, mw.__self__) if isinstance(func, types.FunctionType) else None
    method = inspect.getattr_static(type(mw), "__call__", None)
    if isinstance(method, types.FunctionType):
        return method, mw
    return None


_VARIADIC = inspect.CO_VARARGS | inspect.CO_VARKEYWORDS


def _with_next(mw: Middleware, call_next: CallNext) -> CallNext | None:
    """``mw`` with ``call_next`` built in, so the layer is called as ``(message, context)``.

    A copy of the middleware's own function (the same code, globals, closure
    and attributes) whose third parameter defaults to ``call_next``, bound to
    the middleware object: calling a layer is then one call into the
    middleware itself, with no wrapper frame in between. ``None`` when the
    function is not exactly ``(message, context, call_next)`` after ``self``
    (variadic, with defaults of its own, or another arity): the caller then
    wraps it in a small step function instead.
    """
    found = _python_call(mw)
    if found is None:
        return None
    func, bound = found
    code = func.__code__
    if (
        code.co_argcount != (3 if bound is None else 4)
        or code.co_flags & _VARIADIC
        or func.__defaults__ is not None
    ):
        return None
    linked = types.FunctionType(
        code, func.__globals__, func.__name__, (call_next,), func.__closure__
    )
    linked.__qualname__ = func.__qualname__
    linked.__module__ = func.__module__
    linked.__doc__ = func.__doc__
    linked.__kwdefaults__ = func.__kwdefaults__
    linked.__dict__.update(func.__dict__)
    return linked if bound is None else types.MethodType(linked, bound)


def _link(mw: Middleware, call_next: CallNext) -> CallNext:
    if _call_next_is_keyword_only(mw):
        return functools.partial(mw, call_next=call_next)  # type: ignore[call-arg]
    linked = _with_next(mw, call_next)
    if linked is not None:
        return linked
    found = _python_call(mw)
    fn: Callable[..., Awaitable[Any]] = (
        mw if found is None or found[1] is None else types.MethodType(found[0], found[1])
    )

    # A plain function, not a coroutine: it returns the middleware's own
    # coroutine, so a layer costs one call and one coroutine, no wrapper frame.
    def step(message: Any, context: DispatchContext) -> Awaitable[Any]:
        return fn(message, context, call_next)

    return step


class Pipeline:
    """An ordered, checked, frozen chain of middlewares around a terminal step.

    Args:
        middlewares: Outermost first.
        terminal: The step at the centre (the handler invocation).
        kind: ``"command"`` or ``"query"``, used in messages.

    Raises:
        PipelineConfigurationError: a placement constraint is violated.
    """

    __slots__ = ("_call", "_frozen", "kind", "middlewares")

    def __init__(self, middlewares: Sequence[Middleware], terminal: CallNext, *, kind: str) -> None:
        for mw in middlewares:
            if not callable(mw):
                raise PipelineConfigurationError(
                    f"{mw!r} is not a middleware: it is not callable",
                    order=[middleware_name(m) for m in middlewares],
                    offender=middleware_name(mw),
                )
        _check_order(middlewares, kind)
        self.kind = kind
        self.middlewares: tuple[Middleware, ...] = tuple(middlewares)
        call = terminal
        for mw in reversed(self.middlewares):
            call = _link(mw, call)
        self._call: CallNext = call
        self._frozen = True

    def __setattr__(self, name: str, value: Any) -> None:
        if getattr(self, "_frozen", False):
            raise PipelineFrozenError(
                f"The {self.kind} pipeline is built and frozen; list every middleware when "
                "creating the mediator"
            )
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        raise PipelineFrozenError(
            f"The {self.kind} pipeline is built and frozen; list every middleware when "
            "creating the mediator"
        )

    def __call__(self, message: Any, context: DispatchContext) -> Awaitable[Any]:
        return self._call(message, context)

    @property
    def order(self) -> tuple[str, ...]:
        """Middleware names, outermost first, ending with ``"handler"``."""
        return (*(middleware_name(m) for m in self.middlewares), "handler")

    def describe(self) -> str:
        """The resolved order as one line, e.g. ``tracing -> logging -> handler``."""
        return " -> ".join(self.order)

    def __repr__(self) -> str:
        return f"Pipeline({self.kind}: {self.describe()})"
