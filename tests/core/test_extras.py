"""A feature used without its extra names the extra to install (a subprocess in
which the extra's modules cannot be imported stands for a venv without it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cqrs_ddd_core.exceptions import ConfigurationError
from cqrs_ddd_core.extras import MissingExtraError, extra_for, install_hint, require
from tests.support.blocked_imports import run_without

REPORT = """
try:
    {code}
except Exception as exc:
    print(type(exc).__name__, isinstance(exc, ModuleNotFoundError), exc, sep="|")
else:
    print("no error")
"""


def error_without(blocked: list[str], code: str, cwd: Path) -> list[str]:
    completed = run_without(blocked, REPORT.format(code=code), cwd=cwd)
    assert completed.returncode == 0, completed.stderr
    return completed.stdout.strip().split("|")


@pytest.mark.parametrize(
    ("blocked", "code", "extra"),
    [
        (["sqlalchemy"], "import cqrs_ddd_core.adapters.sqlalchemy", "sqlite"),
        (
            ["aiosqlite"],
            "from cqrs_ddd_core.adapters.sqlalchemy import create_engine; "
            "create_engine('sqlite:///x.db')",
            "sqlite",
        ),
        (
            ["asyncpg"],
            "from cqrs_ddd_core.adapters.sqlalchemy import create_engine; "
            "create_engine('postgresql://u@h/db')",
            "postgres",
        ),
        (
            ["opentelemetry.sdk"],
            "from cqrs_ddd_core.telemetry.setup import setup_telemetry",
            "otel",
        ),
        (
            ["opentelemetry.exporter.otlp"],
            "from cqrs_ddd_core.telemetry.setup import setup_telemetry; "
            "setup_telemetry('s', otlp_endpoint='http://127.0.0.1:9', set_global=False)",
            "otel",
        ),
        (
            ["opentelemetry.exporter.prometheus"],
            "from cqrs_ddd_core.telemetry.setup import setup_telemetry; "
            "setup_telemetry('s', traces=False, prometheus_port=0, set_global=False)",
            "otel",
        ),
    ],
    ids=["sqlalchemy", "aiosqlite", "asyncpg", "otel-sdk", "otlp-exporter", "prometheus-exporter"],
)
def test_a_missing_extra_is_named_in_one_typed_error(
    blocked: list[str], code: str, extra: str, tmp_path: Path
) -> None:
    kind, _, message = error_without(blocked, code, tmp_path)

    assert kind in ("MissingExtraError", "ConfigurationError"), message
    assert f"cqrs-ddd-advanced-core[{extra}]" in message
    assert "\n" not in message


def test_without_the_otel_extra_the_library_itself_still_imports(tmp_path: Path) -> None:
    completed = run_without(
        ["opentelemetry.sdk", "opentelemetry.exporter", "sqlalchemy", "rich"],
        "import cqrs_ddd_core, cqrs_ddd_advanced_core; print('ok')",
        cwd=tmp_path,
    )

    assert completed.stdout.strip() == "ok", completed.stderr


def test_the_error_is_a_configuration_error_and_a_module_not_found_error() -> None:
    with pytest.raises(MissingExtraError) as caught:
        require("rich.no_such_module", feature="The demo")

    error = caught.value
    assert isinstance(error, ConfigurationError)
    assert isinstance(error, ModuleNotFoundError)
    assert (error.name, error.extra) == ("rich.no_such_module", "cli")
    assert str(error) == (
        "The demo needs rich, which is not installed: pip install 'cqrs-ddd-advanced-core[cli]'"
    )


def test_each_optional_module_maps_to_its_extra() -> None:
    assert extra_for("sqlalchemy.ext.asyncio") == "sqlite"
    assert extra_for("asyncpg") == "postgres"
    assert extra_for("opentelemetry.sdk.trace") == "otel"
    assert extra_for("opentelemetry.trace") is None  # the API is in the base install
    assert install_hint("sqlalchemy") == (
        "pip install 'cqrs-ddd-advanced-core[sqlite]' (or [postgres])"
    )
    assert install_hint("left_pad") == "pip install left_pad"
