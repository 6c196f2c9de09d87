"""The documentation site builds strictly and holds the reference it promises."""

from __future__ import annotations

import argparse
import html
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

from cqrs_ddd_advanced_core.cli.main import build_parser
from cqrs_ddd_core.exceptions import CqrsDddError
from cqrs_ddd_core.telemetry import names

# The first test to ask for the site waits for the whole build.
pytestmark = pytest.mark.timeout(900)

PACKAGES = ("cqrs_ddd_core", "cqrs_ddd_advanced_core")


def text_of(page: Path) -> str:
    """The page's text, tags dropped and entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))


def plain(rst: str) -> str:
    """``rst`` as the page shows it: roles by their target's last name, no markup."""
    text = re.sub(r":[\w:]+:`~?(?:[^`<]*<)?([^`>]+)>?`", lambda m: m[1].split(".")[-1], rst)
    return re.sub(r"[`*]", "", text).rstrip(".:")


def public_module_names() -> list[str]:
    found = []
    for name in PACKAGES:
        found.append(name)
        package = importlib.import_module(name)
        for info in pkgutil.walk_packages(package.__path__, f"{name}."):
            if not any(part.startswith("_") for part in info.name.split(".")):
                found.append(info.name)
    return found


def test_the_site_has_the_four_kinds_of_pages(site: Path) -> None:
    for page in (
        "index.html",
        "tutorials/index.html",
        "tutorials/getting-started.html",
        "how-to/index.html",
        "reference/index.html",
        "explanation/index.html",
        "migration/index.html",
    ):
        assert (site / page).is_file(), page


def test_every_public_module_has_a_reference_page_with_its_docstring(site: Path) -> None:
    for name in public_module_names():
        page = site / "reference" / "_api" / f"{name}.html"
        assert page.is_file(), name
        summary = (importlib.import_module(name).__doc__ or "").strip().splitlines()[0]
        assert plain(summary).split()[-1] in text_of(page), name


def test_the_cli_reference_lists_every_command_and_option(site: Path) -> None:
    page = text_of(site / "reference" / "cli.html")
    parser = build_parser()
    subcommands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert subcommands
    for action in subcommands:
        for command, sub in action.choices.items():
            assert f"cqrs-ddd {command}" in page
            for option in sub._actions:
                for flag in option.option_strings:
                    assert flag in page, flag


def test_every_telemetry_name_is_in_the_reference(site: Path) -> None:
    page = text_of(site / "reference" / "telemetry.html")
    for constant in names.__all__:
        value = getattr(names, constant)
        assert constant in page
        if isinstance(value, str):
            assert value in page, constant


def test_every_error_has_a_cause_and_a_remedy_in_the_reference(site: Path) -> None:
    page = text_of(site / "reference" / "errors.html")
    errors: set[type] = set()
    pending = [CqrsDddError]
    while pending:
        cls = pending.pop()
        errors.add(cls)
        pending.extend(cls.__subclasses__())
    shown = {cls for cls in errors if cls.__module__.startswith(PACKAGES)}
    sections = page.split("Cause.")
    assert len(sections) - 1 >= len(shown)
    for cls in shown:
        assert cls.__name__ in page, cls.__name__
    assert page.count("Remedy.") == page.count("Cause.")


def test_the_diagrams_are_rendered_into_the_site_not_fetched(site: Path) -> None:
    for page in ("explanation/architecture.html", "explanation/persistence-flow.html"):
        source = (site / page).read_text()
        images = re.findall(r'(?:src|data)="([^"]+\.svg)"', source)
        assert images, page
        for image in images:
            assert not image.startswith(("http:", "https:", "//")), image
            assert (site / page).parent.joinpath(image).resolve().is_file(), image
