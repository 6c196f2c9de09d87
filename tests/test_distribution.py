"""The wheel and sdist build offline, pass `twine check`, and hold what an install needs."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    completed = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel", "-o", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return out


@pytest.mark.timeout(300)
def test_twine_accepts_the_wheel_and_the_sdist(dist: Path) -> None:
    files = sorted(str(p) for p in dist.iterdir())
    assert len(files) == 2, files

    completed = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *files],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert completed.returncode == 0, completed.stdout + completed.stderr


@pytest.mark.timeout(300)
def test_the_wheel_holds_both_packages_typed_and_the_console_script(dist: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA")))
        entry_points = archive.read(next(n for n in names if n.endswith("entry_points.txt")))

    for package in ("cqrs_ddd_core", "cqrs_ddd_advanced_core"):
        assert f"{package}/__init__.py" in names
        assert f"{package}/py.typed" in names
    assert not any(n.startswith(("tests/", "docs/", "benchmarks/")) for n in names)
    assert b"Requires-Python: >=3.11" in metadata
    assert b"Provides-Extra: postgres" in metadata
    assert b"cqrs-ddd = cqrs_ddd_advanced_core.cli.main:main" in entry_points


@pytest.mark.timeout(300)
def test_the_packages_import_from_the_unpacked_wheel(dist: Path, tmp_path: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path)
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "import cqrs_ddd_core, cqrs_ddd_advanced_core; "
        "print(cqrs_ddd_core.__file__.startswith(sys.argv[1]), cqrs_ddd_core.__version__)"
    )

    completed = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split()[0] == "True"


@pytest.mark.timeout(300)
def test_the_sdist_holds_the_readme_and_the_sources(dist: Path) -> None:
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}

    assert {"README.md", "pyproject.toml", "src/cqrs_ddd_core/__init__.py"} <= names
