"""Public names of the observability packages, the default pipelines, and a lean root import."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap

import pytest

from cqrs_ddd_core.adapters.memory import InMemoryUnitOfWork
from cqrs_ddd_core.cqrs import HandlerRegistry, Mediator
from cqrs_ddd_core.middleware import default_command_middlewares, default_query_middlewares


@pytest.mark.parametrize(
    "module_name",
    [
        "cqrs_ddd_core.middleware",
        "cqrs_ddd_core.telemetry",
        "cqrs_ddd_core.telemetry.setup",
        "cqrs_ddd_core.testing",
    ],
)
def test_every_exported_name_exists_once(module_name: str) -> None:
    module = importlib.import_module(module_name)
    exported = module.__all__

    assert len(set(exported)) == len(exported)  # ruff (RUF022) keeps them sorted
    for name in exported:
        assert getattr(module, name) is not None


def test_the_default_command_pipeline_is_tracing_logging_metrics_validation_unit_of_work() -> None:
    mediator = Mediator(HandlerRegistry(), InMemoryUnitOfWork)

    assert mediator.describe() == (
        "commands: tracing -> logging -> metrics -> validation -> unit_of_work -> handler\n"
        "queries:  tracing -> logging -> metrics -> validation -> handler"
    )


def test_without_a_unit_of_work_factory_the_default_has_no_unit_of_work() -> None:
    names = [getattr(m, "name", "") for m in default_command_middlewares(uow_factory=None)]

    assert names == ["tracing", "logging", "metrics", "validation"]
    assert [getattr(m, "name", "") for m in default_query_middlewares()] == names


def test_importing_the_library_and_its_middlewares_loads_no_sdk() -> None:
    script = textwrap.dedent(
        """
        import sys
        import cqrs_ddd_core, cqrs_ddd_core.middleware, cqrs_ddd_core.telemetry
        loaded = sorted(m for m in sys.modules if m.startswith(("opentelemetry.sdk",
            "opentelemetry.exporter", "prometheus_client")))
        print(loaded)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "[]"
