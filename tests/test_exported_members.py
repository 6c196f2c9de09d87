"""Each public package exports exactly what its ``__all__`` says, and imports stay lean.

Packages are discovered from the source tree, so sub-packages added later are
checked as soon as they define ``__all__``.
"""

from __future__ import annotations
import __future__

import importlib
import json
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOTS = ("cqrs_ddd_core", "cqrs_ddd_advanced_core")
SRC = Path(__file__).resolve().parents[1] / "src"
# Dunder names a package may list in __all__ on purpose.
EXPORTED_DUNDERS = frozenset({"__version__"})


def public_packages() -> list[str]:
    """Every package under the roots whose dotted path has no private part."""
    found = []
    for root in ROOTS:
        for init in sorted((SRC / root).rglob("__init__.py")):
            parts = init.parent.relative_to(SRC).parts
            if not any(part.startswith("_") for part in parts):
                found.append(".".join(parts))
    return found


def public_names(module: types.ModuleType) -> list[str]:
    """Names bound in ``module`` without a leading underscore, minus its sub-modules."""
    names = []
    for name, value in vars(module).items():
        if name.startswith("_"):
            continue
        if isinstance(value, types.ModuleType) and value.__name__.startswith(f"{module.__name__}."):
            continue  # a sub-module bound by importing it, not an export
        if isinstance(value, __future__._Feature):
            continue  # `from __future__ import annotations`
        names.append(name)
    return sorted(names)


def isort_style(name: str) -> tuple[int, list[int | str]]:
    """The order ruff's RUF022 keeps ``__all__`` in: CONSTANTS, then Classes, then the rest,
    each group in natural order (``a2`` before ``a10``)."""
    if len(name) > 1 and name.isupper():
        group = 0
    elif name[:1].isupper():
        group = 1
    else:
        group = 2
    return group, [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def test_sorted_means_the_order_ruff_keeps() -> None:
    names = ["a10", "Redactor", "__version__", "REDACTED", "T", "a2", "Instruments", "DEFAULT"]

    assert sorted(names, key=isort_style) == [
        "DEFAULT",
        "REDACTED",
        "Instruments",
        "Redactor",
        "T",
        "__version__",
        "a2",
        "a10",
    ]


def test_both_packages_are_found() -> None:
    packages = public_packages()

    assert "cqrs_ddd_core" in packages
    assert "cqrs_ddd_advanced_core" in packages
    assert "cqrs_ddd_core.cqrs" in packages


@pytest.mark.parametrize("package", public_packages())
def test_the_public_names_of_a_package_are_what_its_sorted_all_says(package: str) -> None:
    module = importlib.import_module(package)
    exported = getattr(module, "__all__", None)
    if exported is None:
        # Without __all__ a package exports nothing: it only holds sub-packages.
        assert package not in ROOTS, f"{package} must define __all__"
        assert public_names(module) == [], f"{package} binds public names: define __all__"
        return

    assert list(exported) == sorted(exported, key=isort_style), f"{package}.__all__ is unsorted"
    assert len(set(exported)) == len(exported), f"{package}.__all__ lists a name twice"
    assert public_names(module) == sorted(n for n in exported if not n.startswith("_"))
    assert {n for n in exported if n.startswith("_")} <= EXPORTED_DUNDERS
    for name in exported:
        assert hasattr(module, name), f"{package}.__all__ lists {name}, which is not defined"


FORBIDDEN_ON_IMPORT = (
    "sqlalchemy",
    "aiosqlite",
    "asyncpg",
    "psycopg",
    "opentelemetry.sdk",
    "opentelemetry.exporter",
    "aio_pika",
)


@pytest.mark.parametrize("package", ROOTS)
def test_importing_a_package_imports_neither_sqlalchemy_nor_the_opentelemetry_sdk(
    package: str,
) -> None:
    # A fresh interpreter: this test process has long imported everything.
    script = f"import json, sys; import {package}; print(json.dumps(sorted(sys.modules)))"
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = json.loads(completed.stdout)

    offending = [
        name
        for name in loaded
        if any(name == f or name.startswith(f"{f}.") for f in FORBIDDEN_ON_IMPORT)
        or name.startswith("cqrs_ddd_core.adapters.")
    ]
    assert offending == []
    assert package in loaded  # the import did happen
