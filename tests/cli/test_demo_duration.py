"""``--duration`` and ``--rate``: a demo that lasts as long as asked, at the pace asked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cqrs_ddd_advanced_core.demo.workload import Workload
from tests.cli.demo_process import run_demo
from tests.cli.test_shop import MemoryShop


def test_a_duration_and_a_rate_bound_the_run(tmp_path: Path) -> None:
    completed = run_demo(
        [
            "--duration=2",
            "--rate=40",
            "-c=4",
            "--json",
            f"--database-url=sqlite:///{tmp_path}/d.db",
        ],
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    summary = json.loads(completed.stdout)
    assert summary["commands_requested"] == 0  # no count asked for: the duration decides
    assert 2.0 <= summary["elapsed_s"] < 10.0
    # Paced: step k waits for its slot, k / 40 s in (a race, 4 % of the steps, sends
    # two commands in one slot).
    assert 1 <= summary["commands"] <= 2 * 40 * 1.15
    assert summary["database_check"]["integrity"]["ok"]


def test_commands_and_duration_end_with_whichever_comes_first(tmp_path: Path) -> None:
    completed = run_demo(
        ["-n=25", "--duration=120", "--json", f"--database-url=sqlite:///{tmp_path}/d.db"],
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    summary = json.loads(completed.stdout)
    assert summary["commands"] == 25
    assert summary["elapsed_s"] < 60


@pytest.mark.parametrize("argument", ["--duration=0", "--rate=0", "--duration=-1", "--rate=x"])
def test_a_duration_or_rate_that_is_not_positive_is_a_usage_error(
    tmp_path: Path, argument: str
) -> None:
    completed = run_demo([argument], cwd=tmp_path)
    assert completed.returncode == 2
    assert argument.split("=")[0] in completed.stderr


@pytest.mark.parametrize(
    "kwargs",
    [{"commands": None}, {"commands": 5, "duration": 0}, {"commands": 5, "rate": -1.0}],
)
def test_the_workload_refuses_a_run_without_an_end_or_with_a_bad_pace(
    kwargs: dict[str, object],
) -> None:
    with pytest.raises(ValueError, match=r"commands|duration|rate"):
        Workload(MemoryShop().shop, concurrency=1, **kwargs)  # type: ignore[arg-type]


async def test_a_workload_with_a_duration_stops_sending_when_it_is_over() -> None:
    memory = MemoryShop()
    stats = await Workload(memory.shop, commands=None, duration=0.5, concurrency=2).run()
    assert stats.commands > 0
    assert 0.5 <= stats.elapsed_s < 5
    assert not stats.interrupted
