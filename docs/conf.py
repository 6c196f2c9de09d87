"""Sphinx configuration of the documentation site.

Build it with ``bash scripts/docs.sh`` (strict: every warning is an error).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

from cqrs_ddd_core.version import __version__  # noqa: E402

project = "cqrs-ddd-advanced-core"
author = "The cqrs-ddd-advanced-core authors"
copyright = "the cqrs-ddd-advanced-core authors"
release = __version__
version = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.graphviz",
    "sphinx.ext.viewcode",
    "cqrs_docs",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# Option names such as --metrics-port must stay two hyphens, not a dash.
smartquotes = False

# -- MyST ----------------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# -- autodoc (one page per public module: see _ext/cqrs_docs.py) -----------------
autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
    "member-order": "bysource",
}
autodoc_typehints = "description"
autodoc_preserve_defaults = True
autodoc_typehints_description_target = "documented_params"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True

# Type hints name classes of other libraries (SQLAlchemy, OpenTelemetry,
# pydantic...). Their inventories would have to be fetched from the network,
# which the build never does, so references to them are not resolved.
nitpicky = False

# -- Graphviz (Debian's `graphviz`; rendered at build time, no network) --------
graphviz_output_format = "svg"

# -- HTML ----------------------------------------------------------------------
html_theme = "furo"
html_title = f"cqrs-ddd-advanced-core {release}"
html_static_path: list[str] = []
html_show_sourcelink = False
