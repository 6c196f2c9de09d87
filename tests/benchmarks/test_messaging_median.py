"""Workload 8 judges its latency target on the median of its runs at 500/s."""

from __future__ import annotations

from typing import Any

from benchmarks.workloads.messaging import _median_run


def _run(p50: float, tag: str) -> dict[str, Any]:
    return {"p50_ms": p50, "tag": tag}


def test_the_median_run_by_p50_is_taken_whatever_the_order() -> None:
    runs = [_run(30.4, "slow"), _run(12.4, "fast"), _run(17.8, "middle")]
    assert _median_run(runs)["tag"] == "middle"
    assert _median_run(list(reversed(runs)))["tag"] == "middle"


def test_of_an_even_count_the_lower_middle_run_is_taken() -> None:
    assert _median_run([_run(25.0, "b"), _run(15.0, "a")])["tag"] == "a"
    assert _median_run([_run(9.0, "only")])["tag"] == "only"
