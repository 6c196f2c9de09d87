"""The quick start example runs and shows what it promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_quickstart_example_runs_and_prints_its_pipelines_and_stored_events() -> None:
    completed = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), "--orders", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    out = completed.stdout
    assert "commands: timing -> validation -> unit_of_work -> event_persistence -> handler" in out
    assert "queries:  timing -> validation -> handler" in out
    assert "refused: the payment service is down; stored: None" in out
    assert "PlaceOrder is invalid: amount: Input should be greater than 0" in out
    assert "The command pipeline's order is: event_persistence -> unit_of_work -> handler" in out
    assert "2 events stored, positions 1..2:" in out
