"""The code in README.md and the docs site's pages (docs/**/*.md) runs and prints what
the text says.

Rules, per Markdown file:

* every fenced ``python`` block runs, in file order, in one namespace (so a
  block may continue the previous one), unless it contains ``# not-run``;
* a fenced ``text`` block right after a python block (only blank lines between)
  is the exact output that block must print;
* each file runs in a fresh interpreter, from the repository root.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.rabbitmq import rabbitmq_url

__all__ = ["rabbitmq_url"]  # the fixture, for the pages that need a broker

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)

# Runs the blocks given as JSON on stdin; prints each block's output as JSON.
RUNNER = """
import contextlib, io, json, sys
blocks = json.load(sys.stdin)
namespace = {"__name__": "__main__"}
outputs = []
for block in blocks:
    code = "\\n" * (block["line"] - 1) + block["code"]
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        exec(compile(code, block["path"], "exec"), namespace)
    outputs.append(buffer.getvalue())
print(json.dumps(outputs))
"""


@dataclass(frozen=True)
class Block:
    line: int  # where the code starts in the file, 1-based
    code: str
    expected_output: str | None


def site_pages() -> list[Path]:
    """Every Markdown page of the docs site (not what a build generates)."""
    return sorted(
        path
        for path in (ROOT / "docs").rglob("*.md")
        if not {"_build", "_api"} & set(path.relative_to(ROOT / "docs").parts)
    )


def documents() -> list[Path]:
    """README.md and the site's pages, those with at least one block to run."""
    candidates = [ROOT / "README.md", *site_pages()]
    return [path for path in candidates if runnable_blocks(path.read_text())]


def runnable_blocks(text: str) -> list[Block]:
    fences = list(FENCE.finditer(text))
    blocks = []
    for index, fence in enumerate(fences):
        if fence["info"].strip() != "python" or "# not-run" in fence["body"]:
            continue
        expected = None
        following = fences[index + 1] if index + 1 < len(fences) else None
        if (
            following is not None
            and following["info"].strip() == "text"
            and not text[fence.end() : following.start()].strip()
        ):
            expected = following["body"]
        line = text.count("\n", 0, fence.start("body")) + 1
        blocks.append(Block(line, fence["body"], expected))
    return blocks


def test_the_readme_has_runnable_examples_with_their_output() -> None:
    blocks = runnable_blocks((ROOT / "README.md").read_text())

    assert len(blocks) >= 2
    assert all(block.expected_output for block in blocks[:2])


def test_the_quick_start_is_exactly_two_commands_that_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1]
    first = FENCE.search(section)
    assert first is not None
    assert first["info"].strip() == "bash"

    commands = first["body"].strip().splitlines()

    assert commands == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    for command in commands:
        assert (ROOT / command.split()[1]).is_file()


def test_every_tutorial_has_code_that_runs_and_output_it_must_print() -> None:
    tutorials = [p for p in site_pages() if p.parent.name == "tutorials" and p.name != "index.md"]

    assert tutorials
    for page in tutorials:
        blocks = runnable_blocks(page.read_text())
        assert blocks, f"{page.relative_to(ROOT)} has no python block that runs"
        assert any(b.expected_output for b in blocks), f"{page.relative_to(ROOT)} shows no output"


@pytest.mark.parametrize("document", documents(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_the_python_examples_of_a_document_run_and_print_what_it_shows(
    document: Path, request: pytest.FixtureRequest
) -> None:
    text = document.read_text()
    blocks = runnable_blocks(text)
    env = dict(os.environ)
    if "AMQP_URL" in text:  # a page whose examples need RabbitMQ gets the test broker
        env["AMQP_URL"] = request.getfixturevalue("rabbitmq_url")
    payload = [
        {"line": b.line, "code": b.code, "path": str(document.relative_to(ROOT))} for b in blocks
    ]

    completed = subprocess.run(
        [sys.executable, "-c", RUNNER],
        input=json.dumps(payload),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )

    assert completed.returncode == 0, completed.stderr
    outputs = json.loads(completed.stdout)
    for block, output in zip(blocks, outputs, strict=True):
        if block.expected_output is not None:
            where = f"{document.name}:{block.line}"
            assert output == block.expected_output, f"output of the block at {where}"
