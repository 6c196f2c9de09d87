"""A real PostgreSQL server for tests.

``CQRS_TEST_POSTGRES_URL`` (e.g. ``postgresql://postgres@127.0.0.1:5432/postgres``)
points the tests at a running server; otherwise a throwaway cluster is made
with ``initdb`` and started with ``pg_ctl`` (Debian's binaries in
``/usr/lib/postgresql/<version>/bin``, or the ones on ``PATH``) on 127.0.0.1
and a free port, with trust authentication, in a temporary directory that is
removed when it stops. Run as root, the binaries run as the ``postgres`` OS
user (``runuser -u postgres --``) on a data directory that user owns.

Either way each test session gets a database of its own, created on first
use and dropped at the end, with the adapters' tables in it.

Without PostgreSQL the tests that need it are skipped with the reason,
unless ``CI`` is set: there a missing server is a broken CI, and they fail.

The server is shared by every test folder of the session: conftests import
the fixtures from here, and the first one started is reused (reference
counted) until the last fixture using it is torn down.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "TABLES",
    "PostgresServer",
    "empty_pg_engine",
    "find_bindir",
    "pg_engine",
    "postgres_database_url",
    "require_postgres",
    "truncate_all",
]

ENV_URL = "CQRS_TEST_POSTGRES_URL"
TABLES = (
    "events",
    "outbox",
    "audit_log",
    "aggregate_state",
    "snapshots",
    "projection_checkpoints",
    "inbox",
)


def require_postgres(reason: str) -> None:
    """Skip the calling test, or fail it when ``CI`` is set."""
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{reason} (CI is set: the CI script must provide PostgreSQL)")
    pytest.skip(reason)


def find_bindir() -> Path | None:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``, if any."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for bindir in candidates:
        if all((bindir / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return bindir
    return None


def _free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class PostgresServer:
    """A throwaway cluster: :meth:`start` it, use :attr:`url`, :meth:`stop` it."""

    bindir: Path
    durable: bool = False  # False: fsync off, for fast tests; True for benchmarks
    port: int = 0
    basedir: Path | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, as_owner: bool = True) -> subprocess.CompletedProcess[str]:
        command = list(args)
        if as_owner and os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)

    def start(self) -> PostgresServer:
        if os.geteuid() == 0 and shutil.which("runuser") is None:
            raise RuntimeError("running as root needs runuser to start PostgreSQL as postgres")
        self.basedir = Path(tempfile.mkdtemp(prefix="cqrs-pg-"))
        try:
            self._start(self.basedir)
        except BaseException:
            self.stop()  # whatever got started, and the directory
            raise
        return self

    def _start(self, basedir: Path) -> None:
        data = basedir / "data"
        if os.geteuid() == 0:
            shutil.chown(basedir, user="postgres")
        self.port = _free_port()
        # Who started it, for anyone wondering about a cluster left behind by a
        # session that was killed before it could stop it.
        (basedir / "owner.pid").write_text(f"{os.getpid()}\n")
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
        )
        options = [
            "-c listen_addresses=127.0.0.1",
            f"-p {self.port}",
            f"-k {basedir}",
            "-c max_connections=200",
        ]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            " ".join(options),
            "-l",
            str(basedir / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self) -> None:
        if self.basedir is None:
            return
        try:
            self._run(
                str(self.bindir / "pg_ctl"), "-D", str(self.basedir / "data"), "-m", "fast", "stop"
            )
        except (subprocess.SubprocessError, OSError):
            pass
        finally:
            shutil.rmtree(self.basedir, ignore_errors=True)
            self.basedir = None


class _Shared:
    """The session's server and database, shared by every conftest that uses them."""

    users = 0
    server: PostgresServer | None = None
    admin_url: str | None = None
    database_url: str | None = None
    error: str | None = None


async def _admin(url: str, sql: str) -> None:
    import asyncpg

    parsed = make_url(url)
    conn = await asyncpg.connect(
        host=parsed.host,
        port=parsed.port or 5432,
        user=parsed.username,
        password=parsed.password,
        database=parsed.database or "postgres",
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _create_schema(url: str) -> None:
    from cqrs_ddd_core.adapters.sqlalchemy import create_engine, create_tables

    engine = create_engine(url)
    try:
        await create_tables(engine)
    finally:
        await engine.dispose()


def _run_async(coro: Any) -> None:
    """Run ``coro`` to completion, also when called inside a running event loop."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(coro)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name="postgres-admin")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def _acquire() -> str:
    if _Shared.database_url is not None:
        _Shared.users += 1
        return _Shared.database_url
    if _Shared.error is not None:
        require_postgres(_Shared.error)
    admin_url = os.environ.get(ENV_URL)
    if not admin_url:
        bindir = find_bindir()
        if bindir is None:
            _Shared.error = (
                f"PostgreSQL is not installed (no initdb/pg_ctl) and {ENV_URL} is not set"
            )
            require_postgres(_Shared.error)
        assert bindir is not None
        try:
            _Shared.server = PostgresServer(bindir).start()
            # Also stop it if the session ends without tearing fixtures down
            # (an error in a plugin, Ctrl-C); a no-op after a normal teardown.
            atexit.register(_release_server)
        except (subprocess.SubprocessError, OSError, RuntimeError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            _Shared.error = f"could not start a throwaway PostgreSQL cluster: {detail}"
            require_postgres(_Shared.error)
        assert _Shared.server is not None
        admin_url = _Shared.server.url
    name = f"cqrs_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        _run_async(_admin(admin_url, f'CREATE DATABASE "{name}"'))
        database_url = make_url(admin_url).set(database=name).render_as_string(False)
        _run_async(_create_schema(database_url))
    except Exception as exc:
        _release_server()
        _Shared.error = f"PostgreSQL at {admin_url} is not usable: {exc!r}"
        require_postgres(_Shared.error)
    _Shared.admin_url, _Shared.database_url = admin_url, database_url
    _Shared.users = 1
    return database_url


def _release_server() -> None:
    if _Shared.server is not None:
        _Shared.server.stop()
        _Shared.server = None


def _release() -> None:
    _Shared.users -= 1
    if _Shared.users > 0:
        return
    name = make_url(_Shared.database_url or "").database
    if _Shared.admin_url and name:
        for _ in range(3):
            try:
                _run_async(_admin(_Shared.admin_url, f'DROP DATABASE IF EXISTS "{name}"'))
                break
            except Exception:
                time.sleep(0.5)
    _release_server()
    _Shared.admin_url = _Shared.database_url = None


@pytest.fixture(scope="session")
def postgres_database_url() -> Iterator[str]:
    """The URL of this session's database, with the adapters' tables (empty at each test)."""
    url = _acquire()
    try:
        yield url
    finally:
        _release()


async def truncate_all(engine: AsyncEngine) -> None:
    """Empty the adapters' tables and restart their positions at 1."""
    from sqlalchemy import text

    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY"))


@asynccontextmanager
async def empty_pg_engine(url: str, **options: Any) -> AsyncIterator[AsyncEngine]:
    """``create_engine(url, **options)`` with the adapters' tables emptied first,
    disposed afterwards."""
    from cqrs_ddd_core.adapters.sqlalchemy import create_engine

    engine = create_engine(url, **options)
    try:
        await truncate_all(engine)
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def pg_engine(postgres_database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on this session's database, its tables emptied first."""
    async with empty_pg_engine(postgres_database_url) as engine:
        yield engine
