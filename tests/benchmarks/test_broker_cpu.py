"""``benchmarks/broker_cpu.py`` and the node settings of the benchmarks' broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import rabbitmq
from tests.support.rabbitmq import SERVER

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(240)


async def test_node_settings_are_refused_for_a_broker_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(rabbitmq.ENV_URL, "amqp://guest:guest@127.0.0.1:1/")
    with pytest.raises(RuntimeError, match="node settings"):
        async with rabbitmq.broker(erl_args="+S 1:1"):
            pass


@pytest.mark.skipif(not SERVER.is_file(), reason="RabbitMQ is not installed")
def test_each_variant_round_confirms_and_delivers_every_message_and_reads_the_node() -> None:
    env = {k: v for k, v in os.environ.items() if k != rabbitmq.ENV_URL}
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.broker_cpu", "--messages", "40", "--rate", "400",
         "--rounds", "1", "--settle", "0.1", "today", "one-hop", "node-S1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=200, check=True,
    ).stdout  # fmt: skip
    rounds = [json.loads(line) for line in out.splitlines() if line.startswith('{"round"')]
    assert sorted(r["variant"] for r in rounds) == ["node-S1", "one-hop", "today"]
    for r in rounds:
        assert r["confirmed"] == r["delivered"] == 40
        assert r["cpu_ms_per_message"] > 0
        assert r["reductions_per_message"] > 0
    schedulers = {r["variant"]: r["schedulers"] for r in rounds}
    assert schedulers["node-S1"] == 1  # its Erlang flags reached the node
    assert schedulers["today"] == schedulers["one-hop"] == os.cpu_count()
