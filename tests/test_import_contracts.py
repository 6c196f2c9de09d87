"""The import-linter contracts in pyproject.toml can fail: each one catches a planted violation.

Every case copies ``src`` to a temporary folder, adds one forbidden import and
runs ``lint-imports`` on the copy for the one contract that must catch it. A
contract that is misconfigured (a typo in a module name, a wildcard that
matches nothing, a too-wide ignore) would pass here and fail this test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Violation:
    contract: str
    files: dict[str, str]  # path under src -> text appended (the file is created if missing)
    reported: str  # what lint-imports must print


VIOLATIONS = {
    "core imports advanced": Violation(
        "core-independent",
        {"cqrs_ddd_core/context.py": "import cqrs_ddd_advanced_core\n"},
        "cqrs_ddd_core.context -> cqrs_ddd_advanced_core",
    ),
    "pipeline imports an adapter": Violation(
        "no-adapters-in-domain",
        {"cqrs_ddd_core/pipeline/pipeline.py": "import cqrs_ddd_core.adapters.memory\n"},
        "cqrs_ddd_core.pipeline.pipeline -> cqrs_ddd_core.adapters.memory",
    ),
    "a new advanced sub-package imports an adapter": Violation(
        "no-adapters-in-domain",
        {"cqrs_ddd_advanced_core/planted/__init__.py": "import cqrs_ddd_core.adapters.memory\n"},
        "cqrs_ddd_advanced_core.planted -> cqrs_ddd_core.adapters.memory",
    ),
    "a middleware imports the OpenTelemetry SDK": Violation(
        "sdk-and-drivers",
        {"cqrs_ddd_core/middleware/planted.py": "import opentelemetry.sdk.trace\n"},
        "cqrs_ddd_core.middleware.planted -> opentelemetry.sdk.trace",
    ),
    "the CLI imports SQLAlchemy directly": Violation(
        "sdk-and-drivers",
        {
            "cqrs_ddd_advanced_core/cli/__init__.py": "",
            "cqrs_ddd_advanced_core/cli/planted.py": "import sqlalchemy\n",
        },
        "cqrs_ddd_advanced_core.cli.planted -> sqlalchemy",
    ),
    "the relay imports aio-pika directly": Violation(
        "sdk-and-drivers",
        {"cqrs_ddd_advanced_core/messaging/relay.py": "import aio_pika\n"},
        "cqrs_ddd_advanced_core.messaging.relay -> aio_pika",
    ),
    "messaging code imports the RabbitMQ adapter": Violation(
        "no-adapters-in-domain",
        {
            "cqrs_ddd_advanced_core/messaging/consumer.py": (
                "import cqrs_ddd_advanced_core.adapters.rabbitmq\n"
            )
        },
        "cqrs_ddd_advanced_core.messaging.consumer -> cqrs_ddd_advanced_core.adapters.rabbitmq",
    ),
    "the root package pulls in the SDK through the allowed setup helper": Violation(
        "lean-root-import",
        {
            "cqrs_ddd_core/telemetry/__init__.py": "",
            "cqrs_ddd_core/telemetry/setup.py": "import opentelemetry.sdk.trace\n",
            "cqrs_ddd_core/context.py": "import cqrs_ddd_core.telemetry.setup\n",
        },
        "cqrs_ddd_core -> cqrs_ddd_core.context",
    ),
}


def lint_imports() -> str:
    beside = Path(sys.executable).with_name("lint-imports")
    found = str(beside) if beside.exists() else shutil.which("lint-imports")
    if found is None:
        pytest.fail("lint-imports is not installed (pip install -e '.[dev]')")
    return found


@pytest.mark.parametrize("violation", VIOLATIONS.values(), ids=VIOLATIONS.keys())
def test_each_contract_catches_a_planted_violation(violation: Violation, tmp_path: Path) -> None:
    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for relative, text in violation.files.items():
        path = tmp_path / "src" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as file:
            file.write(f"\n{text}")

    completed = subprocess.run(
        [lint_imports(), "--no-cache", "--contract", violation.contract, "pyproject.toml"],
        cwd=tmp_path,
        # The copy comes first on the path, before the editable install's src.
        env={**os.environ, "PYTHONPATH": str(tmp_path / "src"), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = completed.stdout + completed.stderr

    assert completed.returncode == 1, output
    assert "BROKEN" in output
    assert violation.reported in output


def test_every_source_folder_is_a_regular_package_so_the_contracts_see_it() -> None:
    # import-linter (grimp) skips a folder without __init__.py inside a package:
    # its modules would escape every contract.
    missing = [
        folder.relative_to(ROOT).as_posix()
        for package in ("cqrs_ddd_core", "cqrs_ddd_advanced_core")
        for folder in [ROOT / "src" / package, *(ROOT / "src" / package).rglob("*")]
        if folder.is_dir()
        and folder.name != "__pycache__"
        and any(folder.glob("*.py"))
        and not (folder / "__init__.py").is_file()
    ]

    assert missing == []
