"""Running ``cqrs-ddd demo`` as a subprocess, as a user does, and reading what it prints."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["DemoProcess", "demo_command", "run_demo"]


def demo_command() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m``."""
    script = Path(sys.executable).with_name("cqrs-ddd")
    if script.exists():
        return [str(script)]
    found = shutil.which("cqrs-ddd")
    if found and Path(found).resolve().parent == Path(sys.executable).resolve().parent:
        return [found]
    return [sys.executable, "-m", "cqrs_ddd_advanced_core.cli.main"]


def _environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    for name in list(env):
        if name.startswith("OTEL_"):  # a developer's collector settings must not leak in
            del env[name]
    env["NO_COLOR"] = "1"
    env["COLUMNS"] = "120"
    env.update(extra or {})
    return env


def run_demo(
    args: Sequence[str],
    *,
    cwd: Path,
    timeout: float = 180.0,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the demo to completion; stdout and stderr captured as text.

    ``OTEL_*`` variables of the caller's environment are removed; ``env`` adds variables.
    """
    return subprocess.run(
        [*demo_command(), "demo", *args],
        cwd=cwd,
        env=_environment(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class DemoProcess:
    """A running demo; stdout (the ``--json`` summary) is collected by a thread."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        cwd: Path,
        log_path: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [*demo_command(), "demo", *args],
            cwd=cwd,
            env=_environment(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        self._stdout: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for chunk in iter(lambda: self.process.stdout.read1(65536), b""):  # type: ignore[union-attr]
            self._stdout.append(chunk)

    @property
    def stdout(self) -> str:
        return b"".join(self._stdout).decode(errors="replace")

    def stderr(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def summary(self) -> dict[str, Any] | None:
        """The JSON summary once it was printed completely, else ``None``."""
        text = self.stdout.strip()
        if not text:
            return None
        try:
            parsed: dict[str, Any] = json.loads(text)
        except json.JSONDecodeError:
            return None
        return parsed

    def wait_for_summary(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.summary()
            if found is not None:
                return found
            if self.process.poll() is not None:
                self._reader.join(timeout=5)
                found = self.summary()
                if found is not None:
                    return found
                raise AssertionError(
                    f"the demo exited with {self.process.returncode} without a summary:\n"
                    f"stdout: {self.stdout}\nstderr: {self.stderr()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"no summary after {timeout}s:\n{self.stderr()}")
            time.sleep(0.1)

    def send_signal(self, signum: int = signal.SIGINT) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._reader.join(timeout=5)
        self._log.close()
