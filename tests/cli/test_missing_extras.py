"""``cqrs-ddd demo`` without the [cli] extra: one line with the install hint, exit 1."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.blocked_imports import run_without

MAIN = """
import sys
from cqrs_ddd_advanced_core.cli.main import main
sys.exit(main(["demo", "-n", "1", "--no-progress", *{extra}]))
"""


EVERY_EXTRA = ["rich", "sqlalchemy", "aiosqlite", "asyncpg", "opentelemetry.sdk"]


@pytest.mark.parametrize(
    ("blocked", "extra"),
    [
        (["rich"], []),
        (["sqlalchemy"], []),
        (["aiosqlite"], []),
        # Telemetry is set up only when asked for: metrics (or an OTLP endpoint).
        (["opentelemetry.sdk", "opentelemetry.exporter"], ["--metrics-port=0"]),
        ([*EVERY_EXTRA, "opentelemetry.exporter"], []),
    ],
    ids=["rich", "sqlalchemy", "aiosqlite", "otel", "no-extras-at-all"],
)
def test_the_demo_without_an_extra_prints_one_line_with_the_install_hint(
    blocked: list[str], extra: list[str], tmp_path: Path
) -> None:
    completed = run_without(blocked, MAIN.format(extra=extra), cwd=tmp_path)

    assert completed.returncode == 1, completed.stderr
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, completed.stderr
    assert "Traceback" not in completed.stderr
    assert lines[0].startswith("cqrs-ddd demo: error: it needs "), lines[0]
    assert lines[0].endswith("(hint: pip install 'cqrs-ddd-advanced-core[cli]')")
    assert completed.stdout == ""


def test_help_works_without_any_extra(tmp_path: Path) -> None:
    completed = run_without(
        EVERY_EXTRA,
        "import sys\nfrom cqrs_ddd_advanced_core.cli.main import main\nmain(['--help'])",
        cwd=tmp_path,
    )

    assert completed.returncode == 0, completed.stderr
    assert "demo" in completed.stdout
