"""The measuring harness: interleaving, per-round ratios, target verdicts."""

from __future__ import annotations

import json

from benchmarks.harness import (
    Case,
    CaseStats,
    Config,
    Target,
    WorkloadResult,
    interleave,
    ratio,
    summarize,
)


def _config(rounds: int = 4) -> Config:
    return Config.make(quick=True, rounds=rounds, slice_ms=0.5, workdir=".")


async def test_cases_run_in_turns_each_round_starting_with_another_case() -> None:
    trace: list[str] = []

    def case(name: str) -> Case:
        async def run(n: int) -> None:
            trace.append(name)

        return Case(name, name, run, max_ops=1)

    await interleave([case("a"), case("b"), case("c")], _config(rounds=3))

    timed = trace[-9:]  # after warm-up and calibration
    assert timed == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]


async def test_a_slice_runs_the_calibrated_number_of_operations() -> None:
    counts: list[int] = []

    async def run(n: int) -> None:
        counts.append(n)

    stats = await interleave([Case("x", "x", run, min_ops=7, max_ops=7)], _config(rounds=2))

    assert counts[-2:] == [7, 7]
    assert stats[0].ops_per_slice == 7
    assert len(stats[0].per_op_ns) == 2


def test_ratios_are_taken_per_round_then_the_median() -> None:
    cases = [
        CaseStats("slow", "", 1, [10.0, 40.0, 30.0]),
        CaseStats("fast", "", 1, [5.0, 10.0, 30.0]),
    ]

    found = ratio(cases, "speedup", "slow", "fast")

    assert found.values == [2.0, 4.0, 1.0]
    assert found.median == 2.0


def test_targets_are_judged_from_ratios_or_figures_and_unknown_ones_are_not_run() -> None:
    result = WorkloadResult("w", "W", figures={"growth": 3.0})
    result.ratios = [
        ratio([CaseStats("a", "", 1, [6.0]), CaseStats("b", "", 1, [2.0])], "r", "a", "b")
    ]

    summarize(
        result,
        [
            Target("fast", "r", ">=", 5.0, "a is 5x b"),
            Target("small", "growth", "<=", 10.0, "grows less than 10"),
            Target("missing", "nothing", ">=", 1.0, "not measured"),
        ],
    )

    verdicts = {t.name: (t.value, t.met) for t in result.targets}
    assert verdicts == {"fast": (3.0, False), "small": (3.0, True), "missing": (None, None)}
    as_json = json.loads(json.dumps(result.to_json()))
    assert as_json["targets"]["fast"] == {
        "description": "a is 5x b",
        "value": 3.0,
        "op": ">=",
        "threshold": 5.0,
        "met": False,
    }
