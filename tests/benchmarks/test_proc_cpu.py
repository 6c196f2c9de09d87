"""The CPU accounting of the messaging workload's latency runs (Linux ``/proc``)."""

from __future__ import annotations

import os
import socket
import sys
import time

import pytest

from benchmarks import proc_cpu

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _burn(seconds: float) -> None:
    start = time.process_time()
    while time.process_time() - start < seconds:
        pass


def test_the_process_listening_on_a_port_is_found_and_its_cpu_counted() -> None:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        read = proc_cpu.listener_tree(listening.getsockname()[1])
        assert read is not None
        before = read()
        _burn(0.2)
        assert read() - before >= 0.15  # this very process listens


def test_a_port_nobody_listens_on_has_no_reader() -> None:
    with socket.socket() as bound:  # bound, not listening
        bound.bind(("127.0.0.1", 0))
        assert proc_cpu.listener_tree(bound.getsockname()[1]) is None


def test_a_process_that_is_gone_has_no_cpu_figure() -> None:
    assert proc_cpu.process_cpu(os.getpid()) is not None
    assert proc_cpu.process_cpu(2**22 + 1) is None  # above Linux's pid_max
