"""Render a JSON summary as Markdown: ``python -m benchmarks.markdown bench-results.json``.

Used to refresh the "Latest figures" section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["render_markdown"]


def _us(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:,.2f} ms"
    if value >= 10:
        return f"{value:,.1f} µs"
    return f"{value:,.2f} µs"


def _table(header: Sequence[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def render_markdown(summary: dict[str, Any]) -> str:
    machine = summary["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in summary["versions"].items() if v)
    out = [
        f"Run of {summary['date']} ({summary['duration_s']:.0f} s, {summary['rounds']} rounds"
        f"{', --quick' if summary['quick'] else ''}) on {machine['cpus']} CPUs, Python "
        f"{machine['python']}, SQLite {machine['sqlite']}, {machine['platform']}.",
        "",
        f"Versions: {versions}.",
        "",
        f"**Targets: {summary['targets_met']} met, {summary['targets_missed']} missed, "
        f"{summary['targets_not_run']} not run.**",
        "",
    ]
    targets: list[list[str]] = []
    for workload in summary["workloads"].values():
        for name, t in workload.get("targets", {}).items():
            verdict = {True: "met", False: "**missed**", None: "not run"}[t["met"]]
            value = "-" if t["value"] is None else f"{t['value']:.2f}"
            targets.append(
                [name, t["description"], f"{value} {t['op']} {t['threshold']:g}", verdict]
            )
    out += _table(["target", "promise", "value", "verdict"], targets)
    for workload in summary["workloads"].values():
        out += ["", f"### {workload['title']}", ""]
        if workload["status"] != "ok":
            out.append(f"{workload['status']}: {workload.get('reason', '')}")
            continue
        cases = workload.get("cases", {})
        if cases:
            out += _table(
                ["case", "median", "min - max", "ops/s"],
                [
                    [
                        f"`{name}`",
                        _us(c["median_us"]),
                        f"{_us(c['min_us'])} - {_us(c['max_us'])}",
                        f"{c['ops_per_s']:,.0f}",
                    ]
                    for name, c in cases.items()
                ],
            )
            out.append("")
        ratios = workload.get("ratios", {})
        if ratios:
            out += _table(
                ["ratio", "median", "per-round min - max", "meaning"],
                [
                    [
                        f"`{name}`",
                        f"{r['value']:.2f}x",
                        f"{r['min']:.2f} - {r['max']:.2f}",
                        r["meaning"],
                    ]
                    for name, r in ratios.items()
                ],
            )
        figures = {k: v for k, v in workload.get("figures", {}).items() if k != "samples_mb"}
        if figures:
            out += ["", "Figures: `" + json.dumps(figures, separators=(", ", ": ")) + "`"]
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m benchmarks.markdown SUMMARY.json", file=sys.stderr)
        return 2
    with open(args[0], encoding="utf-8") as fh:
        text = fh.read().strip().splitlines()[-1]
    print(render_markdown(json.loads(text)), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
