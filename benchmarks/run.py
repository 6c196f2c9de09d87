"""Run the benchmark suite: ``python -m benchmarks [--quick] [--only NAME ...]``.

Prints a table per workload and ends with one JSON object on the last line of
standard output holding every figure, ratio and target verdict.

Each workload runs in a fresh Python process of its own (all its cases side by
side in that process): process-wide state that one workload sets up
(structlog's configuration, OpenTelemetry providers, python-cqrs's logger
level, memory high-water marks) cannot leak into another's figures.
``--in-process`` runs everything in this process instead (for profiling).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from typing import Any

from benchmarks.harness import Config, TargetResult, WorkloadResult
from benchmarks.report import render

__all__ = ["WORKLOADS", "main"]

# name -> module (under benchmarks.workloads), in running order.
WORKLOADS: dict[str, str] = {
    "dispatch": "dispatch",
    "default_pipeline": "default_pipeline",
    "observability": "observability",
    "sqlite": "sqlite",
    "postgres": "postgres",
    "memory": "memory",
    "snapshots": "snapshots",
    "messaging": "messaging",
    "sqlite_concurrent": "sqlite_concurrent",
    "postgres_64": "postgres_64",
}


def _machine() -> dict[str, Any]:
    try:
        import sqlite3

        sqlite_version = sqlite3.sqlite_version
    except ImportError:  # pragma: no cover
        sqlite_version = None
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "sqlite": sqlite_version,
    }


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {}
    for dist in (
        "cqrs-ddd-advanced-core",
        "python-cqrs",
        "eventsourcing",
        "sqlalchemy",
        "aiosqlite",
        "asyncpg",
        "psycopg",
        "aio-pika",
        "opentelemetry-sdk",
        "structlog",
        "pydantic",
    ):
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            found[dist] = None
    return found


async def _run_one(name: str, cfg: Config) -> WorkloadResult:
    module_name = f"benchmarks.workloads.{WORKLOADS[name]}"
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        return WorkloadResult(name, name, status="skipped", reason=f"cannot import: {exc}")
    title = getattr(module, "TITLE", name)
    try:
        result: WorkloadResult = await module.run(cfg)
    except ImportError as exc:  # a peer or an adapter is not installed
        result = WorkloadResult(
            name,
            title,
            status="skipped",
            reason=f"{exc} (install the bench extra: pip install -e '.[bench]')",
        )
    except Exception as exc:  # one broken workload must not hide the others' figures
        traceback.print_exc(file=sys.stderr)
        result = WorkloadResult(name, title, status="error", reason=f"{type(exc).__name__}: {exc}")
    # A workload that could not run still lists the promises it was meant to check.
    if not result.targets and result.status != "ok":
        result.targets = [
            TargetResult(t.name, t.description, t.op, t.threshold, None, None)
            for t in getattr(module, "TARGETS", [])
        ]
    return result


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny counts (smoke test only)")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(WORKLOADS),
        metavar="NAME",
        help=f"run only this workload (repeatable): {', '.join(WORKLOADS)}",
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds per workload")
    parser.add_argument("--slice-ms", type=float, help="target time of one case's slice")
    parser.add_argument("--workdir", help="scratch directory (default: a temporary one)")
    parser.add_argument("--json-out", help="also write the JSON summary to this file")
    parser.add_argument(
        "--in-process", action="store_true", help="run every workload in this process"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)  # run one workload, write its JSON
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _config(args: argparse.Namespace, workdir: str) -> Config:
    return Config.make(
        quick=args.quick, rounds=args.rounds, slice_ms=args.slice_ms, workdir=workdir
    )


def _child_argv(args: argparse.Namespace, name: str, out: str, workdir: str) -> list[str]:
    argv = [sys.executable, "-m", "benchmarks", "--child", name, "--child-out", out]
    argv += ["--workdir", workdir]
    if args.quick:
        argv.append("--quick")
    if args.rounds is not None:
        argv += ["--rounds", str(args.rounds)]
    if args.slice_ms is not None:
        argv += ["--slice-ms", str(args.slice_ms)]
    return argv


def _run_child(args: argparse.Namespace, name: str, workdir: str) -> dict[str, Any]:
    out = os.path.join(workdir, f"{name}.result.json")
    sub = os.path.join(workdir, name)
    os.makedirs(sub, exist_ok=True)
    sys.stdout.flush()
    done = subprocess.run(_child_argv(args, name, out, sub), check=False)
    try:
        with open(out, encoding="utf-8") as fh:
            found: dict[str, Any] = json.load(fh)
            return found
    except (OSError, ValueError):
        return {
            "title": name,
            "status": "error",
            "reason": f"the workload's process exited with status {done.returncode}",
            "targets": {},
        }


def _summary(workloads: dict[str, dict[str, Any]], cfg: Config, started: float) -> dict[str, Any]:
    verdicts = [t["met"] for w in workloads.values() for t in w.get("targets", {}).values()]
    summary: dict[str, Any] = {
        "suite": "cqrs-ddd-bench",
        "schema": 1,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.time() - started, 1),
        "quick": cfg.quick,
        "rounds": cfg.rounds,
        "machine": _machine(),
        "versions": _versions(),
        "workloads": workloads,
        "targets_met": sum(1 for v in verdicts if v is True),
        "targets_missed": sum(1 for v in verdicts if v is False),
        "targets_not_run": sum(1 for v in verdicts if v is None),
    }
    summary["all_met"] = summary["targets_missed"] == 0 and summary["targets_not_run"] == 0
    return summary


def _child(args: argparse.Namespace) -> int:
    cfg = _config(args, args.workdir)
    result = asyncio.run(_run_one(args.child, cfg))
    render(result)
    with open(args.child_out, "w", encoding="utf-8") as fh:
        json.dump(result.to_json(), fh)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if args.child:
        return _child(args)
    names = [n for n in WORKLOADS if n in (args.only or WORKLOADS)]
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="cqrs-bench-") as tmp:
        workdir = os.path.abspath(args.workdir or tmp)
        os.makedirs(workdir, exist_ok=True)
        cfg = _config(args, workdir)
        workloads: dict[str, dict[str, Any]] = {}
        for name in names:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            if args.in_process:
                result = asyncio.run(_run_one(name, cfg))
                render(result)
                workloads[name] = result.to_json()
            else:
                workloads[name] = _run_child(args, name, workdir)
        summary = _summary(workloads, cfg, started)
    line = json.dumps(summary, separators=(",", ":"))
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as fh:
            fh.write(line + "\n")
    sys.stdout.flush()
    print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
