"""Build the documentation site the way ``scripts/docs.sh`` does, once per test session."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
HTML = DOCS / "_build" / "html"

# The command scripts/docs.sh runs (strict: -W --keep-going, fresh environment).
SPHINX = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-q", "-b", "html"]


@dataclass(frozen=True)
class Build:
    returncode: int
    output: str


def sphinx_build(source: Path, target: Path, timeout: float) -> Build:
    """Run a strict Sphinx build of ``source`` into ``target``."""
    completed = subprocess.run(
        [*SPHINX, str(source), str(target)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Build(completed.returncode, completed.stdout + completed.stderr)
