"""Clear errors: bad arguments exit 2, an unusable database or port exits 1, in one line."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from cqrs_ddd_advanced_core.cli.database import dialect_of, redact
from cqrs_ddd_advanced_core.cli.main import main
from tests.cli.demo_process import run_demo
from tests.support.prometheus import free_port


def _one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-n=-5"], "argument -n/--commands: -5 is out of range: must be at least 1"),
        (["--commands=0"], "must be at least 1"),
        (["--commands=many"], "'many' is not a whole number"),
        (["-c=0"], "argument -c/--concurrency: 0 is out of range"),
        (["--database-url=mysql://db/shop"], "unsupported database URL scheme 'mysql'"),
        (["--database-url=shop.db"], "not a database URL"),
        (["--database-url=sqlite:///:memory:"], "the demo needs a SQLite *file*"),
        (["--database-url=postgresql:///shop"], "no host in"),
        (["--database-url=postgresql://u@db:abc/shop"], "the port in 'db:abc' is not a number"),
        (["--database-url=postgresql://u:pw@db:99999/shop"], "'db:99999' is not a number"),
        (["--metrics-port=70000"], "must be between 0 and 65535"),
        (["--serve-after=-1"], "is not a duration"),
        (["--serve-after=5"], "--serve-after and --keep-serving need --metrics-port"),
        (["--metrics-port=9", "--serve-after=1", "--keep-serving"], "not allowed with argument"),
        (["--log-level=loud"], "invalid choice: 'loud'"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["demo", *args])
    assert exited.value.code == 2
    captured = capsys.readouterr()
    line = _one_line_error(captured.err)
    assert line.startswith("cqrs-ddd demo: error: "), line
    assert message in line, line
    assert line.endswith("(see cqrs-ddd demo --help)")
    assert captured.out == ""


def test_the_console_script_exits_2_on_a_bad_url(tmp_path: Path) -> None:
    completed = run_demo(["--database-url=oracle://db/x"], cwd=tmp_path, timeout=60)
    assert completed.returncode == 2
    assert "unsupported database URL scheme 'oracle'" in _one_line_error(completed.stderr)
    assert completed.stdout == ""


def test_an_unreachable_postgresql_exits_1_with_one_line(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql://shop:s3cret@127.0.0.1:{port}/shop"
    completed = run_demo([f"--database-url={url}", "--json"], cwd=tmp_path, timeout=60)
    assert completed.returncode == 1, completed.stderr
    line = _one_line_error(completed.stderr)
    assert line.startswith(
        f"cqrs-ddd demo: error: cannot reach the database at "
        f"postgresql://shop:***@127.0.0.1:{port}/shop: "
    ), line
    assert "refused" in line.lower() or "connect" in line.lower(), line
    assert "s3cret" not in completed.stderr
    assert completed.stdout == ""


def test_a_missing_sqlite_directory_exits_1(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'missing' / 'shop.db'}"
    completed = run_demo([f"--database-url={url}"], cwd=tmp_path, timeout=60)
    assert completed.returncode == 1
    assert "does not exist" in _one_line_error(completed.stderr)


def test_the_default_database_where_it_cannot_be_created_exits_1_with_a_hint(
    tmp_path: Path,
) -> None:
    # A file where the default database's directory should be: the same OSError
    # path as a read-only directory (which root, running the tests, may write to).
    (tmp_path / "demo-data").write_text("not a directory")

    completed = run_demo(["-n", "1"], cwd=tmp_path, timeout=60)

    assert completed.returncode == 1
    line = _one_line_error(completed.stderr)
    assert line.startswith("cqrs-ddd demo: error: cannot create demo-data/demo.db: "), line
    assert "hint: run the demo in a writable directory" in line
    assert completed.stdout == ""


def test_a_taken_metrics_port_exits_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        completed = run_demo(
            [f"--metrics-port={port}", f"--database-url=sqlite:///{tmp_path / 'x.db'}"],
            cwd=tmp_path,
            timeout=60,
        )
    assert completed.returncode == 1
    line = _one_line_error(completed.stderr)
    assert line.startswith(f"cqrs-ddd demo: error: cannot serve metrics on 127.0.0.1:{port}: ")


@pytest.mark.parametrize(
    ("url", "dialect"),
    [
        ("sqlite:///demo.db", "sqlite"),
        ("sqlite+aiosqlite:////tmp/x.db", "sqlite"),
        ("postgresql://u@h/db", "postgresql"),
        ("postgres://u@h:5432/db", "postgresql"),
        ("postgresql+asyncpg://u:p@h/db", "postgresql"),
    ],
)
def test_supported_urls(url: str, dialect: str) -> None:
    assert dialect_of(url) == dialect


def test_passwords_are_never_shown() -> None:
    assert redact("postgresql://u:pw@h:1/db") == "postgresql://u:***@h:1/db"
    assert redact("sqlite:///x.db") == "sqlite:///x.db"
