"""The built site, shared by the tests of this folder (one strict build per session)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.docs.site import DOCS, HTML, sphinx_build


@pytest.fixture(scope="session")
def site() -> Path:
    """docs/_build/html, freshly built with warnings as errors."""
    if shutil.which("dot") is None:
        pytest.fail("Graphviz's dot is needed for the diagrams (apt-get install graphviz)")
    build = sphinx_build(DOCS, HTML, timeout=900)
    assert build.returncode == 0, f"the strict docs build failed:\n{build.output}"
    return HTML
