"""The progress bar's live figures and the optional Weights & Biases logger."""

import io
import json
import re
import sys

import pytest
from llm_fixtures import SMALL_TINY_MODEL

from sac_glam.cli.launch import main as launch_main
from sac_glam.config import ConfigError
from sac_glam.run.configs import load_config
from sac_glam.run.logging import WANDB_ID_FILE, ProgressBar, read_metrics, wandb_mode
from sac_glam.run.train import train

TINY = [
    "env.n_envs=4", "env.n_objects=3", "env.max_steps=6", "env.goal_types=[grasp]",
    *SMALL_TINY_MODEL, "critic.width=32",
    "train.eval_every=0", "train.eval_episodes=8", "train.log_every=16", "train.progress=false",
    "train.tensorboard=false", "train.threads=1", "sac.batch_size=8", "sac.learning_starts=16",
    "sac.update_every=8", "sac.n_updates=1", "sac.chunk_size=4", "buffer.capacity=200",
]  # fmt: skip


def _cfg(run_dir, *overrides):
    return load_config("sac_glam_her_cpu", [*TINY, f"train.run_dir={run_dir}", *overrides])


def test_progress_bar_counts_episodes_as_they_end_not_only_at_log_records(tmp_path, capsys):
    # One log record, at the first step (no episode has ended yet): the figures must come from the
    # episodes themselves. 240 steps of 6-step episodes on 4 envs end dozens of episodes.
    train(_cfg(tmp_path, "train.progress=true", "train.log_every=100000", "train.total_steps=240"))
    bar_text = capsys.readouterr().err.split("\r")[-1]  # tqdm redraws the line on close
    final = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "rollout/episodes" in r][-1]  # run's end
    assert final["rollout/episodes"] >= 30
    assert f"episodes={int(final['rollout/episodes'])}" in bar_text, bar_text
    assert f"success={final['rollout/success_rate']:.2f}" in bar_text, bar_text


def test_progress_rate_and_eta_are_the_learning_phases_and_the_last_line_is_drawn_once():
    # Issue 37: the fast steps before learning starts made tqdm show ~209 steps/s and a 6 s ETA for
    # a 62 s remainder; and the final line came twice, with different rates.
    now = [0.0]
    out = io.StringIO()
    bar = ProgressBar(1000, 0, file=out, clock=lambda: now[0])
    bar._bar.mininterval = 0  # draw at every update, as a slow run does
    for _ in range(10):  # warm-up: 100 steps at 1,000 steps/s
        now[0] += 0.01
        bar.update(10, 0, [])
    assert str(bar).startswith("warm-up:") and "<?," in str(bar), str(bar)
    for i in range(90):  # learning: 10 steps/s, updates included
        now[0] += 1.0
        bar.update(10, i, [("grasp", 1.0, 6)], learning=True)
        if i == 9:  # 800 steps left at 10 steps/s
            assert "warm-up" not in str(bar) and "10.00step/s" in str(bar) and "<01:20," in str(bar), str(bar)
    bar.evaluated(
        {"eval/train/success_rate": 0.8125, "eval/test/success_rate": 0.5, "eval/train/episode_length": 5}
    )
    now[0] += 30.0  # the final evaluation: the rate stays the learning phase's at its last step
    bar.close()
    finals = [line for line in out.getvalue().split("\r") if "1000/1000" in line]
    assert len(finals) == 1, finals
    assert "10.00step/s" in finals[0] and "eval/train=0.81, eval/test=0.50" in finals[0], finals[0]


def test_the_final_progress_line_shows_the_final_evaluation(tmp_path, capsys):
    result = train(_cfg(tmp_path, "train.progress=true", "train.eval_every=1000", "train.total_steps=96"))
    finals = [line for line in capsys.readouterr().err.split("\r") if "96/96" in line]
    assert len(finals) == 1, finals
    assert f"eval/train={result.eval['eval/train/success_rate']:.2f}" in finals[0], finals[0]


def test_wandb_mode_prefers_the_config_then_the_environment_then_offline():
    assert wandb_mode("", {}) == "offline"
    assert wandb_mode("", {"WANDB_MODE": "online"}) == "online"
    assert wandb_mode("offline", {"WANDB_MODE": "online"}) == "offline"
    assert wandb_mode("disabled", {}) == "disabled"


def test_wandb_true_without_wandb_is_a_one_line_config_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'sac-glam\[wandb\]'"):
        _cfg(tmp_path, "train.wandb=true")
    assert launch_main([*TINY, "train.wandb=true", f"train.run_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.wandb=true needs wandb" in err, err
    _cfg(tmp_path, "train.wandb=false")  # not needed when off


def test_wandb_logs_the_same_scalars_and_the_config_offline_and_resumes_the_same_run(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)  # the default must be offline: no network here
    monkeypatch.setenv("WANDB_SILENT", "true")
    runs = []
    real_init = wandb.init

    def spy_init(**kwargs):
        run = real_init(**kwargs)
        runs.append((kwargs, run, []))
        real_log = run.log

        def log(data, step=None, **kw):
            runs[-1][2].append((step, dict(data)))
            return real_log(data, step=step, **kw)

        run.log = log
        return run

    monkeypatch.setattr(wandb, "init", spy_init)
    train(_cfg(tmp_path, "train.wandb=true", "train.total_steps=64", "train.tensorboard=true"))
    (kwargs, run, logged) = runs[0]
    assert kwargs["mode"] == "offline" and kwargs["config"]["train"]["wandb"] is True
    assert kwargs["config"]["sac"]["batch_size"] == 8 and kwargs["name"] == "sac_glam_her_cpu/seed0"
    assert dict(run.config)["env"]["n_envs"] == 4  # the config reached the run
    records = read_metrics(tmp_path / "metrics.jsonl")
    # The same scalars at the same steps as the JSONL (and so TensorBoard, which logs each of them).
    assert [(r["step"], {k: v for k, v in r.items() if k != "step"}) for r in records] == [
        (step, data) for step, data in logged
    ]
    (store,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    data = store.read_bytes()
    for key in ("rollout/success_rate", "train/critic_loss", "train/alpha", "time/steps_per_s"):
        assert key.encode() in data, key  # written to the offline run, ready for `wandb sync`
    run_id = (tmp_path / WANDB_ID_FILE).read_text().strip()
    assert run_id in store.name

    # Extending the run resumes the checkpoint and continues the same W&B run id.
    train(_cfg(tmp_path, "train.wandb=true", "train.total_steps=96", "train.tensorboard=true"))
    assert runs[1][0]["id"] == run_id and runs[1][0]["resume"] == "allow"
    assert [s for s, _ in runs[1][2]][-1] == 96
    assert json.loads((tmp_path / "result.json").read_text())["steps"] == 96
    assert len(list((tmp_path / "wandb").glob(f"offline-run-*-{run_id}"))) == 2
    assert all(re.fullmatch(r"[0-9a-f]{12}", kw["id"]) for kw, _, _ in runs)
