"""The strict build fails for what it promises to catch: a missing docstring, an orphan
page, a broken reference (each planted in a small site that uses the same extension)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.docs.site import DOCS, sphinx_build

CONF = f"""
import sys
sys.path.insert(0, {str(DOCS / "_ext")!r})
sys.path.insert(0, {{package_dir!r}})
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "cqrs_docs"]
cqrs_docs_packages = ["toy"]
exclude_patterns = ["_build"]
"""

INDEX = """
# Toy

```{toctree}
reference/_api/toy
```
"""


def make_site(tmp_path: Path, module: str, extra_pages: dict[str, str] | None = None) -> Path:
    package = tmp_path / "src" / "toy"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('"""A toy package."""\n')
    (package / "things.py").write_text(module)
    source = tmp_path / "site"
    source.mkdir()
    (source / "conf.py").write_text(CONF.format(package_dir=str(tmp_path / "src")))
    (source / "index.md").write_text(INDEX)
    for name, text in (extra_pages or {}).items():
        (source / name).write_text(text)
    return source


DOCUMENTED = textwrap.dedent(
    '''
    """Things."""


    def thing() -> int:
        """A thing."""
        return 1
    '''
)


def test_a_documented_toy_site_builds(tmp_path: Path) -> None:
    build = sphinx_build(make_site(tmp_path, DOCUMENTED), tmp_path / "out", timeout=120)

    assert build.returncode == 0, build.output


def test_a_public_function_without_a_docstring_fails_the_build(tmp_path: Path) -> None:
    module = DOCUMENTED + "\n\ndef undocumented() -> None:\n    pass\n"
    build = sphinx_build(make_site(tmp_path, module), tmp_path / "out", timeout=120)

    assert build.returncode != 0
    assert "public function toy.things.undocumented has no docstring" in build.output


def test_a_public_method_without_a_docstring_fails_the_build(tmp_path: Path) -> None:
    module = DOCUMENTED + (
        '\n\nclass Thing:\n    """A thing."""\n\n'
        "    def undocumented(self) -> None:\n        pass\n\n"
        "    def _private(self) -> None:\n        pass\n"
    )
    build = sphinx_build(make_site(tmp_path, module), tmp_path / "out", timeout=120)

    assert build.returncode != 0
    assert "public member toy.things.Thing.undocumented has no docstring" in build.output
    assert "_private" not in build.output


def test_a_method_inherits_the_docstring_of_the_one_it_overrides(tmp_path: Path) -> None:
    module = DOCUMENTED + (
        '\n\nclass Base:\n    """A base."""\n\n'
        '    def run(self) -> None:\n        """Run."""\n\n\n'
        'class Child(Base):\n    """A child."""\n\n'
        "    def run(self) -> None:\n        pass\n"
    )
    build = sphinx_build(make_site(tmp_path, module), tmp_path / "out", timeout=120)

    assert build.returncode == 0, build.output


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        ("# Orphan\n\nIn no toctree.\n", "isn't included in any toctree"),
        ("# Broken\n\nSee {doc}`missing-page`.\n", "unknown document"),
        ("# Broken\n\nSee [the page](missing-page.md).\n", "missing-page"),
    ],
    ids=["orphan-page", "broken-doc-role", "broken-markdown-link"],
)
def test_an_orphan_page_or_a_broken_reference_fails_the_build(
    tmp_path: Path, page: str, expected: str
) -> None:
    source = make_site(tmp_path, DOCUMENTED, {"extra.md": page})
    if "toctree" not in page and "Orphan" not in page:
        index = (source / "index.md").read_text()
        listed = index.replace("reference/_api/toy", "reference/_api/toy\nextra")
        (source / "index.md").write_text(listed)
    build = sphinx_build(source, tmp_path / "out", timeout=120)

    assert build.returncode != 0
    assert expected in build.output, build.output
