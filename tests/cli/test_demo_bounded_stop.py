"""After Ctrl-C the demo ends in bounded time: senders are cancelled again until
the run is over, and driver threads left running cannot keep the process alive."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from cqrs_ddd_advanced_core.cli.demo import _stop_until_done


class Workload:
    def __init__(self) -> None:
        self.stops = 0
        self.stopped_twice = asyncio.Event()

    def stop(self) -> None:
        self.stops += 1
        if self.stops == 2:
            self.stopped_twice.set()


async def test_senders_are_cancelled_again_while_the_run_goes_on() -> None:
    workload = Workload()
    running: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    _stop_until_done(workload, running)  # type: ignore[arg-type]
    assert workload.stops == 1
    async with asyncio.timeout(10):
        await workload.stopped_twice.wait()
    running.set_result(None)

    assert workload.stops >= 2


def test_a_leftover_non_daemon_thread_cannot_keep_the_process_alive(tmp_path: Path) -> None:
    program = textwrap.dedent(
        """
        import sys, threading
        from cqrs_ddd_advanced_core.cli import main as cli_main
        cli_main._EXIT_GRACE = 0.5
        before = {t.ident for t in threading.enumerate()}
        threading.Thread(target=threading.Event().wait).start()  # never ends, not a daemon
        print("summary", flush=True)
        sys.exit(cli_main._exit_bounded(130, before))
        """
    )
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-c", program], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )

    assert completed.returncode == 130, completed.stderr
    assert completed.stdout == "summary\n"
    assert time.monotonic() - started < 30
