"""Supported Python versions: pyproject's requires-python and scripts/setup.sh agree on 3.11 to 3.13."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]


def test_requires_python_allows_311_to_313() -> None:
    spec = SpecifierSet(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"])
    assert all(v in spec for v in ("3.11.7", "3.12.3", "3.13.1"))
    assert "3.10.12" not in spec and "3.14.0" not in spec


def _fake_python(tmp_path: Path, version: tuple[int, int]) -> Path:
    """A ``python`` that runs the real interpreter with ``sys.version_info`` set to ``version``."""
    fake = tmp_path / f"python{version[0]}.{version[1]}"
    fake.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = -V ]; then echo "Python {version[0]}.{version[1]}.0"; exit 0; fi\n'
        f'if [ "$1" = -c ]; then exec {sys.executable} -c "import sys; sys.version_info = '
        f'({version[0]}, {version[1]}, 0, \'final\', 0); exec(sys.argv[1])" "$2"; fi\n'
        "exit 2\n"
    )
    fake.chmod(0o755)
    return fake


def _run_setup(tmp_path: Path, version: tuple[int, int]) -> subprocess.CompletedProcess[str]:
    """scripts/setup.sh in a scratch copy of the repository whose .venv is already installed, so
    that only the version check can fail (nothing is installed)."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "setup.sh", repo / "scripts" / "setup.sh")
    shutil.copy(ROOT / "pyproject.toml", repo / "pyproject.toml")
    venv_bin = repo / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").symlink_to(sys.executable)
    digest = hashlib.sha256((repo / "pyproject.toml").read_bytes()).hexdigest()
    (repo / ".venv" / ".sac-glam-installed").write_text(digest + "\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(_fake_python(tmp_path, version))}
    return subprocess.run(
        ["bash", str(repo / "scripts" / "setup.sh")], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("version", [(3, 11), (3, 12), (3, 13)])
def test_setup_accepts_supported_python(tmp_path: Path, version: tuple[int, int]) -> None:
    result = _run_setup(tmp_path, version)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("version", [(3, 10), (3, 14)])
def test_setup_refuses_other_python_in_one_line(tmp_path: Path, version: tuple[int, int]) -> None:
    result = _run_setup(tmp_path, version)
    assert result.returncode != 0
    assert "needs Python 3.11 to 3.13" in result.stderr and "Traceback" not in result.stderr
