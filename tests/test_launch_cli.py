"""``lamorel-launch`` (and ``sac-glam train``, the same command) as a newcomer explores it: the keys in
``--help``, every key's default and docstring (``--keys``), the resolved config (``--cfg job``), a seed
sweep (``-m``), ``--version``, and a default run directory that tells a trial run from the default one
(issue 37, items 6, 7, 10)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from test_cli import TINY_RUN

from sac_glam import __version__
from sac_glam.cli import commands as cli
from sac_glam.cli import launch
from sac_glam.cli.keys import expand_sweep, field_docs, key_docs, split_sweep
from sac_glam.config import Config
from sac_glam.run import configs


def _run(capsys: pytest.CaptureFixture[str], args: list[str], main=launch.main) -> tuple[int, str, str]:
    """``main(args)`` in this process: (exit code, stdout, stderr); a SystemExit is its code."""
    try:
        code = main(args)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


def _resolved(capsys: pytest.CaptureFixture[str], args: list[str]) -> list[dict]:
    code, out, err = _run(capsys, [*args, "--cfg", "job"])
    assert code == 0, err
    return [yaml.safe_load(doc.split("\n", 1)[1]) for doc in out.split("# lamorel-launch")[1:]]


def test_help_lists_every_key_and_the_ways_to_see_them(capsys):
    code, out, _ = _run(capsys, ["--help"])
    assert code == 0
    for k in key_docs():
        assert k.key.rsplit(".", 1)[-1] in out
    assert (
        "train: algo, backend, total_steps" in out and "--keys" in out and "--cfg job" in out and "-m" in out
    )


def test_keys_print_type_value_default_and_docstring(capsys):
    code, out, _ = _run(capsys, ["--keys", "train.total", "train.total_steps=4096"])
    assert code == 0
    head, doc = out.splitlines()
    assert head == f"train.total_steps: int = 4096  (default {Config().train.total_steps!r})"
    assert doc.strip() == " ".join(field_docs(type(Config().train))["total_steps"].split())
    code, _, err = _run(capsys, ["--keys", "trian."])
    assert code == 2 and err.count("\n") == 1 and "sections: buffer, critic, env" in err


def test_every_key_has_a_default_and_most_a_docstring():
    keys = list(key_docs())
    flat = {k.key for k in keys}
    assert {"train.total_steps", "model.tiny.d_model", "sac.batch_size", "lamorel_args"} <= flat
    assert sum(bool(k.doc) for k in keys) > 0.8 * len(keys)


def test_cfg_job_prints_the_resolved_config_and_runs_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (cfg,) = _resolved(capsys, ["--config-name", "ppo_glam_cpu", "train.seed=2"])
    assert cfg["name"] == "ppo_glam_cpu" and cfg["train"]["seed"] == 2 and cfg["train"]["algo"] == "ppo"
    assert cfg["train"]["run_dir"] == "runs/ppo_glam_cpu/seed2"
    assert not (tmp_path / "runs").exists()
    code, _, err = _run(capsys, ["--cfg", "hydra"])
    assert code == 2 and err.count("\n") == 1 and "allowed: job" in err


def test_default_run_dir_tells_a_trial_from_the_default_run(capsys):
    """After ``bash scripts/run.sh train.total_steps=2048``, a plain ``bash scripts/run.sh`` must not
    resume (and extend) the trial: the overrides name the directory, hydra's ``override_dirname`` way;
    keys that do not change the run (threads, progress, seed: already in the path) leave it alone."""
    plain, trial, same, swept = (
        _resolved(capsys, args)[0]["train"]["run_dir"]
        for args in ([], ["train.total_steps=2048"], ["train.threads=1", "train.progress=false"],
                     ["critic.tau=0.1", "model.name=/a/b", "train.total_steps=2048"])
    )  # fmt: skip
    assert plain == same == "runs/sac_glam_her_cpu/seed0"
    assert trial == "runs/sac_glam_her_cpu/train.total_steps=2048/seed0"
    assert swept == "runs/sac_glam_her_cpu/critic.tau=0.1,model.name=_a_b,train.total_steps=2048/seed0"
    (given,) = _resolved(capsys, ["train.run_dir=/tmp/x", "train.total_steps=2048"])
    assert given["train"]["run_dir"] == "/tmp/x"
    long = configs.default_run_dir(Config(name="c"), [f"env.goal_types=[{','.join(['grasp'] * 40)}]"])
    assert len(long.parts[2]) == configs.RUN_DIR_PART_MAX and long.parts[2] != "env.goal_types"


def test_sweep_syntax_keeps_lists_whole():
    assert split_sweep("0,1,2") == ["0", "1", "2"]
    assert split_sweep("[grasp,grow],[grow]") == ["[grasp,grow]", "[grow]"]
    assert split_sweep("'a,b',c") == ["'a,b'", "c"]
    assert expand_sweep(["train.seed=0,1", "critic.tau=0.1,0.2", "x=1"]) == [
        ["train.seed=0", "critic.tau=0.1", "x=1"], ["train.seed=0", "critic.tau=0.2", "x=1"],
        ["train.seed=1", "critic.tau=0.1", "x=1"], ["train.seed=1", "critic.tau=0.2", "x=1"],
    ]  # fmt: skip


def test_multirun_trains_each_seed_in_its_own_directory(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(capsys, ["-m", *TINY_RUN, "train.seed=0,1"])
    assert code == 0, err
    assert "run 1/2" in out and "run 2/2" in out
    dirs = sorted(p.parent.name for p in (tmp_path / "runs").rglob("result.json"))
    assert dirs == ["seed0", "seed1"]
    code, _, err = _run(capsys, ["-m", "train.seed=0,1", f"train.run_dir={tmp_path / 'one'}"])
    assert code == 2 and err.count("\n") == 1 and "train.run_dir" in err
    code, _, err = _run(capsys, ["train.seed=0,1"])  # a sweep without -m: the error says how
    assert (
        code == 2
        and err.count("\n") == 1
        and err.rstrip().endswith("(to sweep comma-separated values, add -m)")
    )


def test_resume_is_announced_with_what_differs(capsys, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    cfg = configs.resolve("sac_glam_her_cpu", ["train.total_steps=2048", f"train.run_dir={run}"], None)
    from sac_glam.config import save_config

    save_config(cfg, run / "config.yaml")
    (run / "checkpoint.pt").write_bytes(b"")
    longer = configs.resolve("sac_glam_her_cpu", ["train.total_steps=20000", f"train.run_dir={run}"], None)
    launch.announce_resume(longer)
    assert capsys.readouterr().out.strip() == (
        f"lamorel-launch: {run} holds a run: resuming it, with train.total_steps: 2048 -> 20000 "
        "(to start a new run, choose another train.run_dir)"
    )
    launch.announce_resume(longer, "sac-glam train")  # the same command under its other name
    assert capsys.readouterr().out.startswith(f"sac-glam train: {run} holds a run: resuming it")
    launch.announce_resume(
        dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, run_dir=str(tmp_path)))
    )
    assert capsys.readouterr().out == ""  # no checkpoint: a new run, nothing to announce


def test_version_on_both_commands(capsys):
    code, out, _ = _run(capsys, ["--version"])
    assert code == 0 and out.strip() == f"lamorel-launch (sac-glam {__version__})"
    code, out, _ = _run(capsys, ["--version"], main=cli.main)
    assert code == 0 and out.strip() == f"sac-glam {__version__}"


def test_sac_glam_train_is_lamorel_launch(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(capsys, ["train", "--config-name", "ppo_glam_cpu", "--cfg", "job"], main=cli.main)
    assert code == 0, err
    assert yaml.safe_load(out.split("\n", 1)[1])["train"]["run_dir"] == "runs/ppo_glam_cpu/seed0"
    code, _, err = _run(capsys, ["train", "sac.gama=0.9"], main=cli.main)
    assert code == 2 and "unknown key sac.gama" in err and err.count("\n") == 1
    assert Path(tmp_path / "runs").exists() is False
