"""Place steps among an existing list of middlewares, by name.

``insert_middlewares(defaults, after={"logging": audit})`` answers "the
defaults, with this step after logging" without rebuilding the list by hand.
The result is an ordinary list: the pipeline built from it checks placement
constraints, is built once and then frozen like any other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from cqrs_ddd_core.exceptions import PipelineConfigurationError
from cqrs_ddd_core.pipeline.pipeline import middleware_name

if TYPE_CHECKING:
    from cqrs_ddd_core.pipeline.pipeline import Middleware

__all__ = ["insert_middlewares"]


def _as_list(steps: Middleware | Sequence[Middleware] | None) -> list[Middleware]:
    if steps is None:
        return []
    if isinstance(steps, (list, tuple)):
        return list(steps)
    return [steps]  # type: ignore[list-item]


def insert_middlewares(
    middlewares: Sequence[Middleware],
    *,
    before: Mapping[str, Middleware | Sequence[Middleware]] | None = None,
    after: Mapping[str, Middleware | Sequence[Middleware]] | None = None,
    kind: str = "command",
) -> list[Middleware]:
    """A new list: ``middlewares`` with steps inserted before or after named ones.

    Args:
        middlewares: The list to start from (it is not changed).
        before: Step name -> the middleware(s) to list right before it.
        after: Step name -> the middleware(s) to list right after it.
        kind: The pipeline's kind, for error messages.

    Several middlewares given for one name keep their order; ``before`` steps
    of a name come first, then the named step, then its ``after`` steps.

    Raises:
        PipelineConfigurationError: a name is not in ``middlewares``, or is
            there more than once (the place would be ambiguous).
    """
    before = before or {}
    after = after or {}
    names = [middleware_name(m) for m in middlewares]
    shown = " -> ".join([*names, "handler"])
    for where, anchors in (("before", before), ("after", after)):
        for anchor in anchors:
            count = names.count(anchor)
            if count != 1:
                problem = "has no step of that name" if count == 0 else f"has {count} of them"
                raise PipelineConfigurationError(
                    f"cannot insert {where} {anchor!r}: the {kind} pipeline {problem}. "
                    f"Its order is: {shown}",
                    order=names,
                    offender=anchor,
                )
    result: list[Middleware] = []
    for middleware, name in zip(middlewares, names, strict=True):
        result.extend(_as_list(before.get(name)))
        result.append(middleware)
        result.extend(_as_list(after.get(name)))
    return result
