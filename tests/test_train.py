"""The training loop end to end: metrics and files, exact resume after SIGTERM, Ctrl-C, config mismatch."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from llm_fixtures import SMALL_TINY_MODEL

from sac_glam.run.checkpoint import load_checkpoint
from sac_glam.run.configs import load_config
from sac_glam.run.learners import PPOLearner, SACLearner
from sac_glam.run.train import EXIT_PREEMPTED, EXIT_REFUSED, Preempted, RunStopped, train

TINY = [
    "env.n_envs=4", "env.n_objects=3", "env.max_steps=6", "env.goal_types=[grasp]",
    *SMALL_TINY_MODEL, "critic.width=32",
    "train.eval_every=0", "train.eval_episodes=8", "train.log_every=16", "train.progress=false",
    "train.tensorboard=false", "train.threads=1",
]  # fmt: skip
SAC_TINY = [*TINY, "sac.batch_size=8", "sac.learning_starts=16", "sac.update_every=8", "sac.n_updates=1",
            "sac.chunk_size=4", "buffer.capacity=200", "train.total_steps=96"]  # fmt: skip
PPO_TINY = [
    *TINY,
    "ppo.n_steps=32",
    "ppo.epochs=2",
    "ppo.batch_size=16",
    "ppo.chunk_size=8",
    "train.total_steps=96",
]


def _cfg(name, overrides, run_dir):
    return load_config(name, [*overrides, f"train.run_dir={run_dir}"])


def signal_at_update(monkeypatch, learner_cls, sig=signal.SIGTERM, call=2):
    """Make the ``call``-th ``learner_cls.update`` send ``sig`` to this process before updating;
    returns the original ``update`` (to put back for the resumed run)."""
    original = learner_cls.update
    calls = {"n": 0}

    def update_then_signal(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            os.kill(os.getpid(), sig)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(learner_cls, "update", update_then_signal)
    return original


@pytest.mark.parametrize("name,overrides", [("sac_glam_her_cpu", SAC_TINY), ("ppo_glam_cpu", PPO_TINY)])
def test_run_writes_metrics_config_checkpoint_and_plot(tmp_path, name, overrides):
    result = train(_cfg(name, [*overrides, "train.eval_every=48"], tmp_path))
    assert result.steps == 96
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    keys = set().union(*records)
    for key in ("rollout/success_rate", "train/critic_loss", "train/actor_loss", "train/entropy",
                "time/steps_per_s", "time/wall_s", "eval/train/success_rate", "eval/test/success_rate"):  # fmt: skip
        assert key in keys, key
    if name.startswith("sac"):
        assert {"train/alpha", "train/q_mean", "buffer/her_share"} <= keys
    assert [r["step"] for r in records] == sorted(r["step"] for r in records)
    for key in keys - {"step"}:  # each metric at most once per step, steps increasing
        steps = [r["step"] for r in records if key in r]
        assert steps == sorted(set(steps)), key
    for f in ("config.yaml", "checkpoint.pt", "metrics.csv", "success.png", "result.json"):
        assert (tmp_path / f).exists(), f


@pytest.mark.parametrize("name,overrides,learner_cls", [
    ("sac_glam_her_cpu", SAC_TINY, SACLearner), ("ppo_glam_cpu", PPO_TINY, PPOLearner),
])  # fmt: skip
def test_resume_after_sigterm_equals_uninterrupted_run(tmp_path, monkeypatch, name, overrides, learner_cls):
    straight = train(_cfg(name, overrides, tmp_path / "straight"))
    # Interrupted run: SIGTERM arrives during the second update; the loop saves at the end of that
    # iteration and exits with EXIT_PREEMPTED.
    original = signal_at_update(monkeypatch, learner_cls)
    with pytest.raises(Preempted) as exc:
        train(_cfg(name, overrides, tmp_path / "resumed"))
    assert exc.value.code == EXIT_PREEMPTED
    stopped_at = load_checkpoint(tmp_path / "resumed")["loop"]["steps"]
    assert 0 < stopped_at < 96
    monkeypatch.setattr(learner_cls, "update", original)
    resumed = train(_cfg(name, overrides, tmp_path / "resumed"))
    assert resumed.steps == straight.steps == 96

    def final_state(run):
        return load_checkpoint(tmp_path / run)

    a, b = final_state("straight"), final_state("resumed")
    for part, tensors in a["backend"]["agent"].items():
        assert tensors, part
        for key, value in tensors.items():
            assert torch.equal(value, b["backend"]["agent"][part][key]), (part, key)
    assert (
        a["loop"]["episodes"] == b["loop"]["episodes"] and a["loop"]["grad_steps"] == b["loop"]["grad_steps"]
    )
    if name.startswith("sac"):
        cfg = _cfg(name, overrides, tmp_path / "x")
        from sac_glam.run.factory import make_learner

        la, lb = make_learner(cfg, np.random.default_rng(0)), make_learner(cfg, np.random.default_rng(0))
        la.load_state_dict(a["learner"])
        lb.load_state_dict(b["learner"])
        assert len(la.buffer) == len(lb.buffer) and la.buffer.her_share() == lb.buffer.her_share()
        ba, bb = (
            la.buffer.sample(16, np.random.default_rng(1)),
            lb.buffer.sample(16, np.random.default_rng(1)),
        )
        assert ba.prompts == bb.prompts and torch.equal(ba.returns, bb.returns)
    # Metrics were not counted twice: one record per logged step.
    steps = [
        json.loads(line)["step"] for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    ]
    straight_steps = [
        json.loads(line)["step"]
        for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == straight_steps


def test_ctrl_c_saves_a_checkpoint_exits_75_and_the_rerun_resumes_past_it(tmp_path):
    # A real lamorel-launch process, sent SIGINT as a terminal's Ctrl-C would (its pid alone), once it
    # has logged past learning_starts; issue 37: it used to exit 130 and the rerun started at step 0.
    cmd = [sys.executable, "-m", "sac_glam.cli.launch", *SAC_TINY, "train.total_steps=100000",
           f"train.run_dir={tmp_path}"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            metrics = tmp_path / "metrics.jsonl"
            if metrics.exists() and any(
                json.loads(x)["step"] >= 48 for x in metrics.read_text().splitlines()
            ):
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_PREEMPTED, err
    stopped_at = load_checkpoint(tmp_path)["loop"]["steps"]
    assert stopped_at >= 48 and f"SIGINT: checkpoint saved at step {stopped_at}" in out
    assert "Ctrl-C: saving a checkpoint" in err and "Traceback" not in err
    cmd[-2] = f"train.total_steps={stopped_at + 32}"
    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming {tmp_path} at step {stopped_at}" in rerun.stdout
    assert load_checkpoint(tmp_path)["loop"]["steps"] == stopped_at + 32


def test_a_second_ctrl_c_aborts_at_once_without_a_checkpoint(tmp_path, monkeypatch):
    original = SACLearner.update

    def update_then_two_interrupts(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # the first asks for a checkpoint at the iteration's end,
        os.kill(os.getpid(), signal.SIGINT)  # the second aborts before it
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SACLearner, "update", update_then_two_interrupts)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg("sac_glam_her_cpu", SAC_TINY, tmp_path))
    assert load_checkpoint(tmp_path)["loop"]["steps"] == 0  # only the step-0 checkpoint
    assert signal.getsignal(signal.SIGINT) is before


def test_time_limit_stops_the_run_then_a_longer_one_resumes_it(tmp_path, capsys):
    """``train.time_limit_s`` ends a run on its clock like ``total_steps`` on its steps (a final
    evaluation, result.json); resumed without the limit, the same run goes on to ``total_steps``."""
    cfg = _cfg("sac_glam_her_cpu", [*SAC_TINY, "train.time_limit_s=1e-9"], tmp_path)
    result = train(cfg)
    assert result.steps == 4  # one iteration of the 4 environments: the clock is past 1e-9 s at once
    assert "train.time_limit_s=1e-09 reached at step 4" in capsys.readouterr().err
    done = json.loads((tmp_path / "result.json").read_text())
    assert done["steps"] == 4 and done["wall_s"] > 0  # the clock the experiment runner reads
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/train/success_rate" in r and r["step"] == 4 for r in records)
    assert train(_cfg("sac_glam_her_cpu", SAC_TINY, tmp_path)).steps == 96


def test_resume_with_a_different_config_is_refused_and_names_keys(tmp_path):
    train(_cfg("sac_glam_her_cpu", SAC_TINY, tmp_path))
    with pytest.raises(RunStopped) as err:
        train(_cfg("sac_glam_her_cpu", [*SAC_TINY, "sac.gamma=0.9"], tmp_path))
    assert err.value.code == EXIT_REFUSED
    assert "sac.gamma: 0.8 (checkpoint) != 0.9 (now)" in str(err.value) and "allow_config_change" in str(
        err.value
    )
    # Extending the budget is allowed.
    assert train(_cfg("sac_glam_her_cpu", [*SAC_TINY, "train.total_steps=128"], tmp_path)).steps == 128


def test_a_checkpoint_older_than_an_option_resumes_at_its_default_only(tmp_path):
    """A checkpoint written before ``sac.backup`` existed ran SAC's backup, the option's default: it
    resumes with the default, and a run that changes the option is refused like any other change."""
    from sac_glam.run.checkpoint import save_checkpoint

    train(_cfg("sac_glam_her_cpu", SAC_TINY, tmp_path))
    ckpt = load_checkpoint(tmp_path)
    assert ckpt is not None and ckpt["config"]["sac"].pop("backup") == "policy"
    save_checkpoint(tmp_path, ckpt)
    with pytest.raises(RunStopped) as err:
        train(
            _cfg("sac_glam_her_cpu", [*SAC_TINY, "sac.backup=boltzmann", "train.total_steps=128"], tmp_path)
        )
    assert err.value.code == EXIT_REFUSED and "sac.backup: 'policy' (checkpoint) != 'boltzmann'" in str(
        err.value
    )
    assert train(_cfg("sac_glam_her_cpu", [*SAC_TINY, "train.total_steps=128"], tmp_path)).steps == 128


def test_corrupt_checkpoint_falls_back_to_previous(tmp_path):
    from sac_glam.run.checkpoint import load_checkpoint, save_checkpoint

    save_checkpoint(tmp_path, {"step": 1})
    save_checkpoint(tmp_path, {"step": 2})
    (tmp_path / "checkpoint.pt").write_bytes(b"truncated")
    assert load_checkpoint(tmp_path) == {"step": 1}
