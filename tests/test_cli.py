"""The command line as a user meets it: errors a user can cause are one line and a non-zero exit,
never a traceback; ``--help`` is plain text; a wheel install finds its configs."""

from __future__ import annotations

import errno
import importlib.metadata
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from llm_fixtures import SMALL_TINY_MODEL

from sac_glam.cli import launch

ROOT = Path(__file__).resolve().parents[1]
# A run of a few seconds: 96 steps of SAC on a 1-block tiny model (tests/test_train.py's TINY).
TINY_RUN = ["env.n_envs=4", "env.n_objects=3", "env.max_steps=6", "env.goal_types=[grasp]",
            *SMALL_TINY_MODEL, "critic.width=32",
            "train.eval_every=0", "train.eval_episodes=8", "train.log_every=16", "train.progress=false",
            "train.tensorboard=false", "train.threads=1", "sac.batch_size=8", "sac.learning_starts=16",
            "sac.update_every=8", "sac.n_updates=1", "sac.chunk_size=4", "buffer.capacity=200",
            "train.total_steps=96"]  # fmt: skip
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _launch(capsys: pytest.CaptureFixture[str], args: list[str]) -> tuple[int, str]:
    """``lamorel-launch args`` in this process: (exit code, stderr). A ``SystemExit`` counts as the
    exit it asks for (what the console script would do with it)."""
    try:
        code = launch.main(args)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    return code, capsys.readouterr().err


def _one_clean_line(stderr: str) -> str:
    """The error line of stderr (``lamorel-launch: ...``, or ``sac-glam: ...`` from the training loop's
    own stops), checked to be the only one and traceback-free."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith(("lamorel-launch:", "sac-glam:"))]
    assert len(lines) == 1, stderr
    return lines[0]


# ---------------------------------------------------------------------------------------------------
# Errors a user can cause (run as the console script would: a subprocess, for the commands)
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("override,names", [
    ("model.name=/nonexistent/model", ["model.name", "/nonexistent/model"]),
    ("env.n_objects=1", ["env.n_objects"]),
])  # fmt: skip
def test_bad_model_or_env_setting_is_one_line_and_exit_2(tmp_path, override, names):
    run = subprocess.run(
        [sys.executable, "-m", "sac_glam.cli.launch", override, f"train.run_dir={tmp_path / 'run'}"],
        capture_output=True, text=True, cwd=tmp_path, env=ENV, timeout=300,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr[-2000:]
    line = _one_clean_line(run.stderr)
    assert all(name in line for name in names), line


def test_checkpoint_of_another_config_is_one_line(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert _launch(capsys, [*TINY_RUN, f"train.run_dir={run_dir}"])[0] == 0
    code, err = _launch(capsys, [*TINY_RUN, "sac.gamma=0.5", f"train.run_dir={run_dir}"])
    line = _one_clean_line(err)
    assert code == 2 and str(run_dir) in line and "sac.gamma" in line, line


def test_checkpoint_of_another_version_is_one_line(tmp_path, capsys, monkeypatch):
    """A checkpoint written before ``sac.actor_loss`` existed (an older version's config lacks the
    key), resumed by this version."""
    import sac_glam.run.train as train_module

    real_to_dict = train_module.to_dict

    def older_version(cfg):
        data = real_to_dict(cfg)
        del data["sac"]["actor_loss"]
        return data

    run_dir = tmp_path / "run"
    with monkeypatch.context() as older:
        older.setattr(train_module, "to_dict", older_version)
        assert _launch(capsys, [*TINY_RUN, "train.total_steps=48", f"train.run_dir={run_dir}"])[0] == 0
    code, err = _launch(capsys, [*TINY_RUN, f"train.run_dir={run_dir}"])
    line = _one_clean_line(err)
    assert code == 2 and str(run_dir) in line and "sac.actor_loss" in line, line


def _read_only_dir(tmp_path: Path) -> Path:
    """A directory this process cannot write in: a 0o500 one, or as root (which writes through
    permission bits) a path under /sys, where the kernel refuses to create anything."""
    directory = tmp_path / "read-only"
    directory.mkdir()
    directory.chmod(0o500)
    try:
        (directory / "probe").write_text("")
    except PermissionError:
        return directory / "run"
    sysfs = Path("/sys") / f"sac-glam-test-{os.getpid()}"
    try:
        sysfs.mkdir()
    except OSError:
        return sysfs / "run"
    sysfs.rmdir()
    pytest.skip("no directory here refuses this process's writes")


@pytest.mark.parametrize("where", ["under a file", "in a read-only directory"])
def test_run_directory_that_cannot_be_written_is_one_line(tmp_path, capsys, where):
    if where == "under a file":
        (tmp_path / "a-file").write_text("")
        run_dir = tmp_path / "a-file" / "run"
    else:
        run_dir = _read_only_dir(tmp_path)
    code, err = _launch(capsys, [*TINY_RUN, f"train.run_dir={run_dir}"])
    line = _one_clean_line(err)
    assert code == 2 and f"train.run_dir={run_dir}" in line, line


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_full_disk_is_one_line(tmp_path, capsys):
    """The checkpoint's temporary file is a link to /dev/full: its first write gets the kernel's ENOSPC."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoint.pt.tmp").symlink_to("/dev/full")
    code, err = _launch(capsys, [*TINY_RUN, f"train.run_dir={run_dir}"])
    line = _one_clean_line(err)
    assert code != 0 and str(run_dir) in line and "No space left on device" in line, line


def test_user_error_finds_the_machine_error_in_the_chain(tmp_path):
    try:
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as err:
            raise RuntimeError("PytorchStreamWriter failed writing file data/0") from err
    except RuntimeError as outer:
        message, code = launch.user_error(outer, tmp_path) or ("", 0)
    assert code == launch.EXIT_MACHINE and str(tmp_path) in message and "No space left" in message
    assert launch.user_error(RuntimeError("a bug"), tmp_path) is None  # a bug keeps its traceback
    assert launch.user_error(OSError(errno.ENOENT, "gone"), tmp_path) is None


def test_list_of_a_missing_config_directory_is_one_line(tmp_path, capsys):
    code, err = _launch(capsys, ["--list", "--config-path", str(tmp_path / "nowhere")])
    assert code == 2 and str(tmp_path / "nowhere") in _one_clean_line(err)


def test_interrupt_is_one_line_and_exit_130(tmp_path, capsys, monkeypatch):
    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(launch, "train_here", interrupted)
    code, err = _launch(capsys, [*TINY_RUN, f"train.run_dir={tmp_path / 'run'}"])
    assert code == 130 and _one_clean_line(err) == "lamorel-launch: interrupted"


# A stand-in for Lamorel's launcher whose RL rank 0 stopped on a user error: it leaves the marker, as
# experiments/lamorel_rl_script.py does, and exits with accelerate's 1 after a traceback of its own.
FAILED_LAUNCHER = """
import sys
from sac_glam.cli.launch import write_user_error
write_user_error(sys.argv[1], "/run/checkpoint.pt was written by a different config; differing keys: sac.gamma", 2)
print("Traceback (most recent call last): ... ChildFailedError", file=sys.stderr)
sys.exit(1)
"""


def test_a_user_error_inside_lamorel_is_repeated_last_with_its_exit_code(tmp_path, capfd):
    code = launch.run_launcher([sys.executable, "-c", FAILED_LAUNCHER, str(tmp_path)], tmp_path, poll_s=0.05)
    lines = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and lines[-1].startswith("lamorel-launch: config error: /run/checkpoint.pt"), lines
    assert not (tmp_path / launch.USER_ERROR_MARKER).exists()  # consumed: a later run does not see it
    assert launch.run_launcher([sys.executable, "-c", "raise SystemExit(1)"], tmp_path) == 1
    # Under `sac-glam train` (the same command) the lines it prints name that command.
    cmd = [sys.executable, "-c", FAILED_LAUNCHER, str(tmp_path)]
    assert launch.run_launcher(cmd, tmp_path, poll_s=0.05, prog="sac-glam train") == 2
    assert capfd.readouterr().err.strip().splitlines()[-1].startswith("sac-glam train: config error: ")


def test_lamorel_model_that_does_not_resolve_fails_before_any_process(tmp_path, capsys, monkeypatch):
    import importlib.util

    pytest.importorskip("transformers")
    real = importlib.util.find_spec
    # Lamorel "installed" (the check only asks whether it is), its launcher never started.
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: object() if name.startswith("lamorel") else real(name, *a),
    )
    monkeypatch.setattr(launch, "run_launcher", lambda *a, **k: pytest.fail("Lamorel's launcher started"))
    lamorel = pytest.importorskip("sac_glam.backends.lamorel", reason="needs lamorel importable")
    assert lamorel is not None
    code, err = _launch(capsys, ["--config-name", "lamorel_cpu", "model.name=/nonexistent/model",
                                 f"train.run_dir={tmp_path / 'run'}"])  # fmt: skip
    line = _one_clean_line(err)
    assert code == 2 and "model.name='/nonexistent/model'" in line, line


# ---------------------------------------------------------------------------------------------------
# --help is plain text
# ---------------------------------------------------------------------------------------------------

MARKUP = ("``", ":func:`", ":class:`", ":meth:`", ":mod:`", ":data:`", "**")


def _commands() -> list[list[str]]:
    """Every command line that has a --help: lamorel-launch, sac-glam, and each of its subcommands."""
    from sac_glam.cli import commands as cli

    return [["lamorel-launch"], ["sac-glam"], *(["sac-glam", name] for name in cli.SELF_PARSING),
            *(["sac-glam", "bench", name] for name in cli.BENCHMARKS)]  # fmt: skip


@pytest.mark.parametrize("argv", _commands(), ids=" ".join)
def test_help_has_no_restructuredtext_markup(argv, capsys):
    from sac_glam.cli import commands as cli

    main = launch.main if argv[0] == "lamorel-launch" else cli.main
    with pytest.raises(SystemExit) as exit_:
        main([*argv[1:], "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and len(out) > 100
    assert not [m for m in MARKUP if m in out], out


def test_plain_strips_markup_but_not_literal_stars():
    from sac_glam.helptext import plain

    text = ":func:`~sac_glam.run.train.train` reads ``seed*/`` runs, *once*, **all**; 3 * 4 and x*y stay"
    assert plain(text) == "train reads seed*/ runs, once, all; 3 * 4 and x*y stay"
    assert plain(":meth:`the update <sac_glam.algos.updaters.SACUpdater.update>`") == "the update"


# ---------------------------------------------------------------------------------------------------
# A wheel, installed outside the repository, carries the configs
# ---------------------------------------------------------------------------------------------------


def test_wheel_install_lists_and_loads_its_configs(tmp_path):
    """``pip wheel .`` then ``pip install --target``: the package imported from there, not from the
    clone, lists the configs and composes one (with its accelerate file) from inside the wheel."""
    # This environment's setuptools builds it when it reads the SPDX license (>= 77, pyproject.toml);
    # otherwise pip fetches one into an isolated build environment.
    setuptools_major = int(importlib.metadata.version("setuptools").split(".")[0])
    isolation = ["--no-build-isolation"] if setuptools_major >= 77 else []
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation,
                    "-w", str(tmp_path / "dist"), str(ROOT)], check=True, capture_output=True, timeout=120)  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("sac_glam-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "sac_glam/lamorel_configs/sac_glam_her_cpu.yaml" in names
    assert "sac_glam/lamorel_configs/accelerate/default_config.yaml" in names
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=120)  # fmt: skip
    env = {**ENV, "PYTHONPATH": str(site)}
    env.pop("SAC_GLAM_CONFIG_DIR", None)
    listed = subprocess.run([sys.executable, "-m", "sac_glam.cli.launch", "--list"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert {"sac_glam_her_cpu", "lamorel_cpu", "ppo_glam"} <= set(listed.stdout.split())
    probe = (
        "import sac_glam; from sac_glam.config import config_dir, load_config; "
        "cfg = load_config('lamorel_cpu'); d = config_dir(); "
        "print(sac_glam.__file__, d, (d / cfg.lamorel_args['accelerate_args']['config_file']).is_file())"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    module, directory, accelerate_found = out.stdout.split()
    assert module.startswith(str(site)) and directory.startswith(str(site)) and accelerate_found == "True"


def test_sac_glam_train_names_itself_in_its_usage_and_errors(capsys):
    """``sac-glam train`` is ``lamorel-launch`` under another name: its usage line and its one-line
    errors say the name the user typed, not the other one."""
    from sac_glam.cli import commands as cli

    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    assert capsys.readouterr().out.startswith("usage: sac-glam train ")
    assert cli.main(["train", "sac.batch_size=many"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sac-glam train: config error: ") and "sac.batch_size" in err, err
