"""A real RabbitMQ node for tests.

``CQRS_TEST_RABBITMQ_URL`` (e.g. ``amqp://guest:guest@127.0.0.1:5672/``)
points the tests at a running broker; otherwise a throwaway
node is started from Debian's ``rabbitmq-server`` on 127.0.0.1 and free
ports, with every file (database, logs, plugin list, Erlang cookie) in a
temporary directory that is removed when it stops. Run as root, the node
runs as the ``rabbitmq`` OS user. Erlang starts slowly (about 10 s here), so
one node serves the whole test session (reference counted, like the
PostgreSQL server); each test uses exchange and queue names of its own
(:func:`unique_name`).

Without RabbitMQ the tests that need it are skipped with the reason, unless
``CI`` is set: there a missing broker is a broken CI, and they fail.

:meth:`RabbitMQServer.restart` stops the node and starts it again on the
same ports and data (durable queues and persistent messages survive it), for
the tests that take the broker away.

A node with other settings (``config``: ``rabbitmq.conf`` lines, ``plugins``:
plugins to enable, ``erl_args``: extra Erlang VM flags) is for measuring
them (``benchmarks/broker_cpu.py``); the tests use the defaults.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = ["RabbitMQServer", "rabbitmq_server", "rabbitmq_url", "require_rabbitmq", "unique_name"]

ENV_URL = "CQRS_TEST_RABBITMQ_URL"
SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
PLUGINS = "[]."  # none needed; the file keeps the system's list out
START_TIMEOUT = 90.0


def require_rabbitmq(reason: str) -> None:
    """Skip the calling test, or fail it when ``CI`` is set."""
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{reason} (CI is set: the CI script must provide RabbitMQ)")
    pytest.skip(reason)


def unique_name(prefix: str) -> str:
    """A name no other test (or run) uses: queues and exchanges are per test."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@dataclass
class RabbitMQServer:
    """A throwaway node: :meth:`start`, :attr:`url`, :meth:`restart`, :meth:`stop`."""

    port: int = 0
    dist_port: int = 0
    basedir: Path | None = None
    config: str = ""
    plugins: tuple[str, ...] = ()
    erl_args: str = ""
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def start(self) -> RabbitMQServer:
        if self.basedir is None:
            self.basedir = Path(tempfile.mkdtemp(prefix="cqrs-rabbitmq-"))
            plugins = f"[{','.join(self.plugins)}]." if self.plugins else PLUGINS
            (self.basedir / "enabled_plugins").write_text(plugins)
            (self.basedir / "owner.pid").write_text(f"{os.getpid()}\n")
            self.port, self.dist_port = _free_port(), _free_port()
            config = self.config
            if "rabbitmq_management" in self.plugins and "management.tcp.port" not in config:
                config += f"\nmanagement.tcp.port = {_free_port()}\n"  # not the shared 15672
            if config:
                (self.basedir / "rabbitmq.conf").write_text(config)
            if os.geteuid() == 0:
                for path in self.basedir.iterdir():
                    shutil.chown(path, user="rabbitmq")
                shutil.chown(self.basedir, user="rabbitmq")
        try:
            self._launch(self.basedir)
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self, base: Path) -> None:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(base),  # the Erlang cookie goes there
            "RABBITMQ_NODENAME": f"cqrs-test-{self.port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(base / "plugins-expand"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_PID_FILE": str(base / "rabbitmq.pid"),
            "RABBITMQ_FEATURE_FLAGS_FILE": str(base / "feature_flags"),
            "RABBITMQ_QUORUM_DIR": str(base / "quorum"),
            "RABBITMQ_STREAM_DIR": str(base / "stream"),
        }
        if self.erl_args:
            env["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"] = self.erl_args
        command = [str(SERVER)]
        if os.geteuid() == 0:
            command = [
                "runuser",
                "-u",
                "rabbitmq",
                "--",
                "env",
                *[f"{k}={v}" for k, v in env.items()],
                *command,
            ]
        log = open(base / "server.out", "ab")  # noqa: SIM115 (the process keeps it)
        self.process = subprocess.Popen(
            command,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stop() ends all of it
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._ready():
            if self.process.poll() is not None:
                tail = (base / "server.out").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"rabbitmq-server exited with {self.process.returncode}: {tail}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"RabbitMQ did not start within {START_TIMEOUT:.0f} s")
            time.sleep(0.2)

    def _ready(self) -> bool:
        # The AMQP port opens once the broker (plugins included) has booted.
        return _accepts(self.port)

    def _terminate(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        # The Erlang VM may outlive the wrapper's process group briefly.
        deadline = time.monotonic() + 30
        while _accepts(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)

    def restart(self) -> None:
        """Stop the node and start it again, same ports and data."""
        self._terminate()
        assert self.basedir is not None
        self._launch(self.basedir)

    def stop(self) -> None:
        self._terminate()
        if self.basedir is not None:
            shutil.rmtree(self.basedir, ignore_errors=True)
            self.basedir = None


class _Shared:
    users = 0
    server: RabbitMQServer | None = None
    url: str | None = None
    error: str | None = None


def _acquire() -> tuple[str, RabbitMQServer | None]:
    if _Shared.url is not None:
        _Shared.users += 1
        return _Shared.url, _Shared.server
    if _Shared.error is not None:
        require_rabbitmq(_Shared.error)
    url = os.environ.get(ENV_URL)
    if not url:
        if not SERVER.is_file():
            _Shared.error = f"RabbitMQ is not installed (no {SERVER}) and {ENV_URL} is not set"
            require_rabbitmq(_Shared.error)
        try:
            _Shared.server = RabbitMQServer().start()
            atexit.register(_release_server)
        except (subprocess.SubprocessError, OSError, RuntimeError) as exc:
            _Shared.error = f"could not start a throwaway RabbitMQ node: {exc}"
            require_rabbitmq(_Shared.error)
        assert _Shared.server is not None
        url = _Shared.server.url
    _Shared.url, _Shared.users = url, 1
    return url, _Shared.server


def _release_server() -> None:
    if _Shared.server is not None:
        _Shared.server.stop()
        _Shared.server = None


def _release() -> None:
    _Shared.users -= 1
    if _Shared.users <= 0:
        _release_server()
        _Shared.url = None


@pytest.fixture(scope="session")
def rabbitmq_url() -> Iterator[str]:
    """The URL of this session's broker (``amqp://...``)."""
    url, _ = _acquire()
    try:
        yield url
    finally:
        _release()


@pytest.fixture(scope="session")
def rabbitmq_server(rabbitmq_url: str) -> RabbitMQServer:
    """The session's throwaway node, for tests that restart it (skipped with an outside broker)."""
    if _Shared.server is None:
        pytest.skip(f"{ENV_URL} points at an outside broker: it is not ours to restart")
    return _Shared.server
