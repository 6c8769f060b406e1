"""Installing off this machine (issue 37, items 1, 2, 10): ``scripts/setup.sh`` takes torch's CPU build
where pip as configured has none; a wheel installed outside the repository runs the documented commands
or says in one line what it needs; the repository has the files a package is expected to have."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import stat
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"

# ---------------------------------------------------------------------------------------------------
# scripts/setup.sh, with a stand-in python whose pip records what it is asked
# ---------------------------------------------------------------------------------------------------

FAKE_PYTHON = """#!/usr/bin/env bash
# Stands in for python3.11 and .venv/bin/python: creates the venv, logs every pip call, and answers a
# dry run with the report in $FAKE_REPORT (what pip as configured would install).
if [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin" && cp "$0" "$3/bin/python" && exit 0; fi
if [ "$1 $2" = "-m pip" ]; then
  shift 2; echo "pip $*" >> "$FAKE_LOG"
  case " $* " in *" --dry-run "*) printf '%s\\n' "$FAKE_REPORT";; esac
  exit 0
fi
exit 0
"""


def _setup(tmp_path: Path, report: dict, **env: str) -> list[str]:
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "setup.sh", repo / "scripts" / "setup.sh")
    shutil.copy(ROOT / "pyproject.toml", repo / "pyproject.toml")
    python = tmp_path / "python3.11"
    python.write_text(FAKE_PYTHON)
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "pip.log"
    run_env = {**os.environ, "PYTHON": str(python), "FAKE_LOG": str(log), "FAKE_REPORT": json.dumps(report, indent=2),
               **env}  # fmt: skip
    if "SAC_GLAM_TORCH_INDEX" not in env:  # the caller's own setting must not leak in
        run_env.pop("SAC_GLAM_TORCH_INDEX", None)
    done = subprocess.run(
        ["bash", "scripts/setup.sh"], cwd=repo, env=run_env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return [
        line
        for line in log.read_text().splitlines()
        if "--dry-run" not in line and "--upgrade pip" not in line
    ]


def _report(version: str | None) -> dict:
    return {
        "version": "1",
        "install": [] if version is None else [{"metadata": {"name": "torch", "version": version}}],
    }


def test_setup_takes_pytorchs_cpu_index_where_pip_would_pull_cuda(tmp_path):
    """An ordinary Linux box: PyPI's torch==2.13.0 is the CUDA build, so setup.sh asks PyTorch's CPU index."""
    assert _setup(tmp_path, _report("2.13.0")) == [
        f"pip install -q --index-url {CPU_INDEX} torch==2.13.0",
        "pip install -q -e .[dev]",
    ]


def test_setup_uses_a_cpu_build_that_pip_finds_itself(tmp_path):
    """This machine: pip's find-links has the CPU wheel; an installed torch is left alone."""
    assert _setup(tmp_path, _report("2.13.0+cpu"))[0] == "pip install -q torch==2.13.0"
    assert _setup(tmp_path / "again", _report(None)) == ["pip install -q -e .[dev]"]


def test_setup_takes_the_index_it_is_given(tmp_path):
    cuda = "https://download.pytorch.org/whl/cu126"
    assert (
        _setup(tmp_path, _report("2.13.0"), SAC_GLAM_TORCH_INDEX=cuda)[0]
        == f"pip install -q --index-url {cuda} torch==2.13.0"
    )
    assert (
        _setup(tmp_path / "b", _report("2.13.0"), SAC_GLAM_TORCH_INDEX="pypi")[0]
        == "pip install -q torch==2.13.0"
    )


def test_readme_documents_the_cpu_index():
    assert f"--index-url {CPU_INDEX}" in (ROOT / "README.md").read_text()


# ---------------------------------------------------------------------------------------------------
# A wheel, installed outside the repository
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory) -> Path:
    """``pip wheel`` of the repository, installed with ``--target`` (its dependencies are this venv's)."""
    tmp = tmp_path_factory.mktemp("wheel")
    setuptools_major = int(importlib.metadata.version("setuptools").split(".")[0])
    isolation = ["--no-build-isolation"] if setuptools_major >= 77 else []
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w", str(tmp / "dist"), str(ROOT)],
                   check=True, capture_output=True, timeout=180)  # fmt: skip
    (wheel,) = (tmp / "dist").glob("sac_glam-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "sac_glam/experiments.yaml" in names
    assert any(n.endswith("licenses/LICENSE") for n in names)
    site = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=180)  # fmt: skip
    return site


def _from_wheel(
    site: Path, cwd: Path, *args: str, path: str = "/usr/bin:/bin"
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site), "PATH": path, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    for key in ("SAC_GLAM_CONFIG_DIR", "SAC_GLAM_EXPERIMENTS"):
        env.pop(key, None)
    return subprocess.run([sys.executable, "-m", "sac_glam.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=180)  # fmt: skip


def test_wheel_lists_and_plans_the_experiments(wheel_site, tmp_path):
    listed = _from_wheel(wheel_site, tmp_path, "experiment", "--list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split()[0] == "fig2" and "fig2-full" in listed.stdout
    plan = _from_wheel(wheel_site, tmp_path, "experiment", "fig2", "--cpu", "--seeds", "0", "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert "would start" in plan.stdout and str(wheel_site) not in plan.stdout
    assert not (tmp_path / "results").exists()


def test_wheel_slurm_says_what_it_needs_and_leaves_nothing(wheel_site, tmp_path):
    """No template in a wheel, and no sbatch on PATH: one line each, exit 2, no run directory made."""
    no_template = _from_wheel(wheel_site, tmp_path, "experiment", "fig2", "--cpu", "--slurm")
    assert no_template.returncode == 2 and no_template.stderr.count("\n") == 1, no_template.stderr
    assert "--template" in no_template.stderr and "Traceback" not in no_template.stderr
    template = tmp_path / "cpu.sbatch"
    shutil.copy(ROOT / "slurm" / "cpu.sbatch", template)
    # A PATH of an empty folder: Debian's sbatch is /usr/bin/sbatch, there in CI (tests/slurm_cluster.sh).
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    no_sbatch = _from_wheel(
        wheel_site,
        tmp_path,
        "experiment",
        "fig2",
        "--cpu",
        "--slurm",
        f"--template={template}",
        path=str(empty),
    )
    assert no_sbatch.returncode == 2 and no_sbatch.stderr.count("\n") == 1, no_sbatch.stderr
    assert "needs sbatch on PATH" in no_sbatch.stderr
    assert not (tmp_path / "results").exists()
    fake = tmp_path / "bin" / "sbatch"  # an sbatch that refuses: its reason, one line, no empty directories
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'sbatch: error: invalid partition specified: nope' >&2\nexit 1\n")
    fake.chmod(0o755)
    refused = _from_wheel(wheel_site, tmp_path, "experiment", "fig2", "--cpu", "--seeds", "0", "--slurm",
                          f"--template={template}", path=str(fake.parent))  # fmt: skip
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert (
        refused.stderr.strip()
        == "sac-glam experiment: sbatch refused the job array of SAC-GLAM: sbatch: error: invalid partition specified: nope"
    )
    assert [p.name for p in (tmp_path / "results" / "fig2-cpu").iterdir()] == ["experiment.json"]


def test_wheel_train_and_version(wheel_site, tmp_path):
    version = _from_wheel(wheel_site, tmp_path, "--version")
    assert (
        version.returncode == 0
        and version.stdout.strip() == f"sac-glam {importlib.metadata.version('sac-glam')}"
    )
    cfg = _from_wheel(wheel_site, tmp_path, "train", "--cfg", "job", "train.seed=1")
    assert cfg.returncode == 0, cfg.stderr
    assert yaml.safe_load(cfg.stdout.split("\n", 1)[1])["train"]["run_dir"] == "runs/sac_glam_her_cpu/seed1"
    lamorel = _from_wheel(wheel_site, tmp_path, "train", "--config-name", "lamorel_cpu")
    assert (
        lamorel.returncode == 2 and lamorel.stderr.count("\n") == 1 and "sac-glam[lamorel]" in lamorel.stderr
    )
    assert not (tmp_path / "runs").exists()  # refused before any run directory is made


# ---------------------------------------------------------------------------------------------------
# The usual files
# ---------------------------------------------------------------------------------------------------


def test_license_citation_changelog_and_project_urls():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["license"] == "MIT" and "MIT License" in (ROOT / "LICENSE").read_text()
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["version"] == meta["version"] and cff["license"] == "MIT"
    paper = cff["preferred-citation"]
    assert paper["title"].startswith("SAC-GLAM: Improving Online RL for LLM agents")
    assert [a["family-names"] for a in paper["authors"]][:1] == ["Gaven"] and paper["year"] == 2024
    assert paper["url"] == "https://arxiv.org/abs/2410.12481" and meta["urls"]["Paper"] == paper["url"]
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog and f"## [{meta['version']}]" in changelog
    import sac_glam

    assert sac_glam.__version__ == meta["version"]
