"""Every script under examples/ runs to completion; ours print what they promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(
    path
    for path in (ROOT / "examples").rglob("*.py")
    if not path.name.startswith("_") and "__pycache__" not in path.parts
)

EXPECTED_LINES = {
    "event_sourcing/mediator_extension.py": [
        "[1] direct: Order order-1 stream versions [1, 2]",
        "[1] direct: rebuilt order is confirmed at version 2",
        "[2] factory: Order stream [1]",
        "[2] factory: Invoice stream [1]",
        "[2] factory: events in the store: 2",
        "[3] decorator: UserPreferences non-event-sourced: True",
        "[3] decorator: events raised 1, stored in the event store 0",
        "[3] decorator: state saved with settings {'language': 'fr'}",
    ],
    "pipeline_composition.py": [
        "A: timing -> validation -> unit_of_work -> event_persistence -> outbox -> audit"
        " -> handler",
        "A: audit saw alice:success",
        "A: events stored 1, outbox messages 1",
        "A: timing measured 2 command(s)",
        "B: audit -> validation -> timing -> unit_of_work -> outbox -> event_persistence"
        " -> handler",
        "B: audit saw alice:success, mallory:error(MessageValidationError)",
        "B: timing measured 1 command(s)",
    ],
}


def test_the_examples_we_describe_exist() -> None:
    found = {path.relative_to(ROOT / "examples").as_posix() for path in EXAMPLES}
    assert set(EXPECTED_LINES) <= found


@pytest.mark.parametrize(
    "script", EXAMPLES, ids=[p.relative_to(ROOT / "examples").as_posix() for p in EXAMPLES]
)
def test_the_example_runs_and_prints_what_it_promises(script: Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(script)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr[-4000:]
    lines = completed.stdout.splitlines()
    for expected in EXPECTED_LINES.get(script.relative_to(ROOT / "examples").as_posix(), []):
        assert expected in lines, f"{expected!r} not in the output:\n{completed.stdout}"
    refused = [line for line in lines if line.startswith("C: refused: event_persistence")]
    if script.name == "pipeline_composition.py":
        assert refused
        assert "timing -> event_persistence -> unit_of_work -> handler" in refused[0]
