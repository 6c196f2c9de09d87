"""Optional dependencies: which extra installs each, and the error that names it.

The base install is lean (pydantic, structlog, the OpenTelemetry API). A
feature used without its extra raises :class:`MissingExtraError`, a
:class:`~cqrs_ddd_core.exceptions.ConfigurationError` that is also a
``ModuleNotFoundError`` (so ``except ImportError`` keeps working), whose
message is the command that fixes it::

    The SQLAlchemy adapter needs sqlalchemy, which is not installed:
    pip install 'cqrs-ddd-advanced-core[sqlite]' (or [postgres])
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Final

from cqrs_ddd_core.exceptions import ConfigurationError

__all__ = ["EXTRAS", "MissingExtraError", "extra_for", "install_hint", "require", "translated"]

DISTRIBUTION: Final = "cqrs-ddd-advanced-core"

EXTRAS: Final[dict[str, str]] = {
    "sqlalchemy": "sqlite",
    "aiosqlite": "sqlite",
    "asyncpg": "postgres",
    "rich": "cli",
    "opentelemetry.sdk": "otel",
    "opentelemetry.exporter": "otel",
    "prometheus_client": "otel",
    "tenacity": "retry",
}
"""Top-level module (or package prefix) -> the extra that installs it."""

_ALSO: Final = {"sqlalchemy": " (or [postgres])"}


def _known(module: str) -> str | None:
    """The key of :data:`EXTRAS` that ``module`` (a dotted name) falls under."""
    parts = module.split(".")
    for length in range(len(parts), 0, -1):
        prefix = ".".join(parts[:length])
        if prefix in EXTRAS:
            return prefix
    return None


def extra_for(module: str) -> str | None:
    """The extra that installs ``module`` (a dotted name), if one does."""
    known = _known(module)
    return None if known is None else EXTRAS[known]


def install_hint(module: str) -> str:
    """``pip install 'cqrs-ddd-advanced-core[<extra>]'`` for ``module``."""
    known = _known(module)
    if known is None:
        return f"pip install {module.split('.')[0]}"
    return f"pip install '{DISTRIBUTION}[{EXTRAS[known]}]'" + _ALSO.get(known, "")


class MissingExtraError(ConfigurationError, ModuleNotFoundError):
    """An optional dependency is not installed; the message says which extra to install.

    Attributes:
        module: The module that could not be imported.
        extra: The extra that installs it (``None`` when none does).
        feature: What needed it (the subject of the message: "The demo").
    """

    def __init__(self, module: str, *, feature: str) -> None:
        shown = _known(module) or module.split(".")[0]
        message = f"{feature} needs {shown}, which is not installed: {install_hint(module)}"
        super().__init__(message)
        self.msg = message  # ImportError keeps its message here too
        self.name = module
        self.module = module
        self.extra = extra_for(module)
        self.feature = feature

    def __str__(self) -> str:
        return self.msg


def _missing(exc: ModuleNotFoundError, fallback: str) -> str:
    return exc.name or fallback


def require(module: str, *, feature: str) -> ModuleType:
    """Import ``module``, or raise :class:`MissingExtraError` naming its extra."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if isinstance(exc, MissingExtraError):
            raise
        raise MissingExtraError(_missing(exc, module), feature=feature) from exc


@contextmanager
def translated(feature: str) -> Iterator[None]:
    """Turn a ``ModuleNotFoundError`` of an optional dependency raised inside the
    block into :class:`MissingExtraError` (others propagate unchanged)."""
    try:
        yield
    except ModuleNotFoundError as exc:
        if isinstance(exc, MissingExtraError) or exc.name is None or extra_for(exc.name) is None:
            raise
        raise MissingExtraError(exc.name, feature=feature) from exc
