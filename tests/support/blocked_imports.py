"""Run Python code in a subprocess in which some modules cannot be imported,
as in a virtualenv installed without an extra (a meta-path finder refuses them)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

__all__ = ["run_without"]

_BLOCKER = """
import importlib.abc, sys

class _Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

BLOCKED = {blocked!r}
sys.meta_path.insert(0, _Blocked())
"""


def run_without(
    blocked: Sequence[str], code: str, *, cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` with the modules (and packages) in ``blocked`` unimportable."""
    program = _BLOCKER.format(blocked=tuple(blocked)) + textwrap.dedent(code)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run(
        [sys.executable, "-c", program],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
