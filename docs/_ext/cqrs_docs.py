"""The site's own Sphinx extension: strictness checks and generated reference pages.

* A check, run on every build, that every public module, class and function of
  both packages has a docstring and a reference page: a missing one is a
  warning, so the strict build (``-W``) fails and names it.
* ``cqrs-cli``: the command-line reference, generated from the argparse parser.
* ``cqrs-telemetry-names``: every telemetry name in ``cqrs_ddd_core.telemetry.names``.
* ``cqrs-errors``: every error class of the project, with its cause (from its
  docstring) and a remedy (from the directive's content; an error without one,
  or a remedy for an error that does not exist, is a warning).

Only the standard library, docutils and Sphinx are used; nothing is fetched.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.pycode import ModuleAnalyzer
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

PACKAGES = ("cqrs_ddd_core", "cqrs_ddd_advanced_core")
API_FOLDER = "reference/_api"

logger = logging.getLogger(__name__)


# -- walking the public API -----------------------------------------------------


def _is_private(dotted: str) -> bool:
    return any(part.startswith("_") for part in dotted.split("."))


def public_modules(packages: Sequence[str] = PACKAGES) -> Iterator[ModuleType]:
    """Every public module of ``packages``, imported, in a stable order."""
    for name in packages:
        package = importlib.import_module(name)
        yield package
        for info in pkgutil.walk_packages(package.__path__, f"{name}."):
            if not _is_private(info.name):
                yield importlib.import_module(info.name)


def public_objects(
    module: ModuleType, packages: Sequence[str] = PACKAGES
) -> Iterator[tuple[str, Any]]:
    """The public classes and functions ``module`` is the home of.

    Its home is the module that defines it, or, for an object defined in a
    private module, every public module that lists it in ``__all__``.
    """
    exported = set(getattr(module, "__all__", ()))
    # pydantic files parametrised generics (``Command[str]``) in their module's
    # namespace under names that are no identifiers: they are no public names.
    for name, value in vars(module).items():
        if (
            name.startswith("_")
            or not name.isidentifier()
            or not (inspect.isclass(value) or inspect.isfunction(value))
        ):
            continue
        home = getattr(value, "__module__", "") or ""
        if home == module.__name__ or (
            name in exported and home.startswith(tuple(packages)) and _is_private(home)
        ):
            yield name, value


def _has_docstring(value: Any) -> bool:
    # vars() rather than getattr: a class's docstring is not inherited, but
    # pydantic and dataclasses may synthesise one.
    own = vars(value).get("__doc__") if inspect.isclass(value) else value.__doc__
    if inspect.isclass(value) and own and own.startswith(f"{value.__name__}("):
        return False  # dataclasses' generated "Name(field: type, ...)"
    return bool(own and own.strip())


def _stub(module: ModuleType, children: list[str]) -> str:
    name = module.__name__
    title = name.replace("_", "\\_")
    lines = [title, "=" * len(title), "", f".. automodule:: {name}", "   :ignore-module-all:", ""]
    if children:
        lines += [".. rubric:: Modules", "", ".. toctree::", "   :maxdepth: 1", ""]
        lines += [f"   {child}" for child in children]
        lines.append("")
    return "\n".join(lines)


def write_api_stubs(app: Sphinx) -> None:
    """One page per public module in ``reference/_api`` (rewritten only when changed).

    Modules are found with :mod:`pkgutil` and imported by name, so a package
    attribute that shadows a submodule (``adapters.sqlalchemy.outbox`` is also
    a table) cannot stand in for the module, and a new module gets its page
    without anyone listing it.
    """
    folder = Path(app.srcdir) / API_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    modules = list(public_modules(app.config.cqrs_docs_packages))
    names = {m.__name__ for m in modules}
    wanted = {}
    for module in modules:
        children = sorted(n for n in names if n.rpartition(".")[0] == module.__name__)
        wanted[f"{module.__name__}.rst"] = _stub(module, children)
    for path in folder.glob("*.rst"):
        if path.name not in wanted:
            path.unlink()
    for filename, text in wanted.items():
        path = folder / filename
        if not path.exists() or path.read_text() != text:
            path.write_text(text)


BASELINE = Path(__file__).with_name("undocumented-members.txt")


def _member_function(value: Any) -> Any:
    """The function behind a class attribute, or None when it is no method or property."""
    if isinstance(value, property):
        return value.fget
    if isinstance(value, (classmethod, staticmethod)):
        return value.__func__
    return value if inspect.isfunction(value) else None


def undocumented_members(cls: type) -> Iterator[str]:
    """Public methods and properties defined on ``cls`` with no docstring of their own
    and none to inherit from a base class."""
    for name, value in vars(cls).items():
        function = _member_function(value)
        if name.startswith("_") or function is None:
            continue
        if (function.__doc__ or "").strip():
            continue
        inherited = any(
            (getattr(_member_function(vars(base).get(name)), "__doc__", None) or "").strip()
            for base in cls.__mro__[1:]
            if name in vars(base)
        )
        if not inherited:
            yield name


def check_public_api(app: Sphinx, env: BuildEnvironment) -> None:
    """Warn for each public module or object without a docstring or reference page."""
    packages = app.config.cqrs_docs_packages
    baseline = set()
    if BASELINE.is_file():
        baseline = {line.strip() for line in BASELINE.read_text().splitlines()}
    for module in public_modules(packages):
        name = module.__name__
        if not (module.__doc__ or "").strip():
            logger.warning("public module %s has no docstring", name, type="cqrs", subtype="doc")
        if f"{API_FOLDER}/{name}" not in env.found_docs:
            logger.warning(
                "public module %s has no reference page (%s/%s)",
                name,
                API_FOLDER,
                name,
                type="cqrs",
                subtype="doc",
            )
        for attr, value in public_objects(module, packages):
            if not _has_docstring(value):
                logger.warning(
                    "public %s %s.%s has no docstring",
                    "class" if inspect.isclass(value) else "function",
                    name,
                    attr,
                    type="cqrs",
                    subtype="doc",
                )
            if inspect.isclass(value):
                for member in undocumented_members(value):
                    dotted = f"{name}.{attr}.{member}"
                    if dotted not in baseline:
                        logger.warning(
                            "public member %s has no docstring", dotted, type="cqrs", subtype="doc"
                        )


# -- helpers for the generated pages --------------------------------------------


class _GeneratedDirective(SphinxDirective):
    """A directive that writes reST and parses it in place."""

    def _parse(self, lines: list[str]) -> list[nodes.Node]:
        container = nodes.section()
        container.document = self.state.document
        source = self.get_source_info()[0]
        text = StringList()
        for line in lines:
            text.append(line, source)
        nested_parse_with_titles(self.state, text, container)
        return list(container.children)


def _resolve(spec: str) -> Any:
    module_name, _, attribute = spec.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def _indent(text: str, prefix: str = "   ") -> list[str]:
    return [prefix + line if line else "" for line in text.splitlines()]


def _escape(text: str) -> str:
    for char in "\\*`|_":
        text = text.replace(char, "\\" + char)
    return text


# -- the CLI --------------------------------------------------------------------


def _option_rows(parser: argparse.ArgumentParser) -> list[tuple[str, str]]:
    rows = []
    for action in parser._actions:  # argparse has no public list of its actions
        if isinstance(action, argparse._SubParsersAction):
            continue
        if action.option_strings:
            names = ", ".join(action.option_strings)
            if action.nargs != 0:
                names += f" {action.metavar or action.dest.upper()}"
        else:
            names = action.metavar or action.dest
        help_text = action.help or ""
        if "%(" in help_text:
            params = {**vars(action), "prog": parser.prog}
            if isinstance(params.get("choices"), (list, tuple)):
                params["choices"] = ", ".join(map(str, params["choices"]))
            help_text = help_text % params
        if action.choices and "%(choices)" not in (action.help or ""):
            help_text += f" (one of: {', '.join(map(str, action.choices))})"
        rows.append((names, help_text))
    return rows


def _subparsers(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.extend(action.choices.items())
    return found


class CliDirective(_GeneratedDirective):
    """``.. cqrs-cli:: module:function`` renders every command and option of a parser."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        parser: argparse.ArgumentParser = _resolve(self.arguments[0])()
        lines: list[str] = []
        self._describe(parser, parser.prog, lines, level="-")
        return self._parse(lines)

    def _describe(
        self, parser: argparse.ArgumentParser, title: str, lines: list[str], level: str
    ) -> None:
        lines += [f"``{title}``", level * (len(title) + 4), ""]
        if parser.description:
            lines += [_escape(parser.description), ""]
        lines += ["::", "", *_indent(parser.format_usage().strip()), ""]
        rows = _option_rows(parser)
        if rows:
            lines += [
                ".. list-table::",
                "   :header-rows: 1",
                "",
                "   * - option",
                "     - meaning",
            ]
            for names, help_text in rows:
                lines += [f"   * - ``{names}``", f"     - {_escape(help_text) or '-'}"]
            lines.append("")
        if parser.epilog:
            lines += [_escape(parser.epilog), ""]
        for name, sub in _subparsers(parser):
            self._describe(sub, f"{parser.prog.split()[0]} {name}", lines, level="~")


# -- telemetry names --------------------------------------------------------------


class TelemetryNamesDirective(_GeneratedDirective):
    """``.. cqrs-telemetry-names:: module`` renders a module's exported constants."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        module = importlib.import_module(self.arguments[0])
        analyzer = ModuleAnalyzer.for_module(module.__name__)
        docs = {name: " ".join(doc).strip() for (_, name), doc in analyzer.find_attr_docs().items()}
        lines = [".. list-table::", "   :header-rows: 1", "   :widths: 25 30 45", ""]
        lines += ["   * - constant", "     - value", "     - meaning"]
        for name in module.__all__:
            value = getattr(module, name)
            shown = ", ".join(map(str, value)) if isinstance(value, tuple) else str(value)
            lines += [
                f"   * - ``{name}``",
                f"     - ``{shown}``",
                f"     - {docs.get(name) or '-'}",
            ]
        return self._parse(lines)


# -- errors ---------------------------------------------------------------------------

_REMEDY = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*):\s*(?P<text>.+)$")


def _error_classes(root: type) -> dict[str, type]:
    found: dict[str, type] = {}
    for module in public_modules():
        for _, value in public_objects(module):
            if inspect.isclass(value) and issubclass(value, root):
                found[value.__name__] = value
    return found


def _cause(error: type) -> str:
    doc = inspect.cleandoc(vars(error).get("__doc__") or "")
    paragraphs = []
    for paragraph in doc.split("\n\n"):
        if paragraph.split(":", 1)[0] in ("Attributes", "Args", "Raises"):
            break
        paragraphs.append(" ".join(paragraph.split()))
    return "\n\n".join(paragraphs) or "-"


class ErrorsDirective(_GeneratedDirective):
    """``.. cqrs-errors:: module:RootError`` renders the error tree with causes and remedies.

    Each content line reads ``ErrorName: what to do``.
    """

    required_arguments = 1
    has_content = True

    def run(self) -> list[nodes.Node]:
        root: type = _resolve(self.arguments[0])
        remedies: dict[str, str] = {}
        for line in self.content:
            if not line.strip():
                continue
            match = _REMEDY.match(line.strip())
            if match is None:
                logger.warning("cqrs-errors: cannot read %r", line, location=self.get_location())
                continue
            remedies[match["name"]] = match["text"]
        errors = _error_classes(root)
        for name in sorted(set(remedies) - set(errors)):
            logger.warning(
                "cqrs-errors: a remedy for %s, which is not an error of the project",
                name,
                location=self.get_location(),
            )
        lines: list[str] = []
        for error in self._tree_order(root, errors):
            name = error.__name__
            remedy = remedies.get(name)
            if remedy is None:
                logger.warning(
                    "cqrs-errors: %s.%s has no remedy on this page",
                    error.__module__,
                    name,
                    location=self.get_location(),
                )
            bases = ", ".join(
                f":py:class:`~{b.__module__}.{b.__qualname__}`" for b in error.__bases__
            )
            lines += [
                name,
                "-" * len(name),
                "",
                f":py:class:`{error.__module__}.{name}` (a {bases})",
                "",
                "**Cause.**",
                "",
                _cause(error),
                "",
                "**Remedy.**",
                "",
                remedy or "-",
                "",
            ]
        return self._parse(lines)

    @staticmethod
    def _tree_order(root: type, errors: dict[str, type]) -> list[type]:
        ordered: list[type] = []

        def visit(cls: type) -> None:
            if cls.__name__ in errors and cls not in ordered:
                ordered.append(cls)
            children = [e for e in errors.values() if cls in e.__bases__]
            for child in sorted(children, key=lambda c: c.__name__):
                visit(child)

        visit(root)
        return ordered


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the checks and directives."""
    app.add_config_value("cqrs_docs_packages", list(PACKAGES), "env", [list])
    app.connect("builder-inited", write_api_stubs)
    app.connect("env-check-consistency", check_public_api)
    app.add_directive("cqrs-cli", CliDirective)
    app.add_directive("cqrs-telemetry-names", TelemetryNamesDirective)
    app.add_directive("cqrs-errors", ErrorsDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
