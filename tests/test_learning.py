"""Learning on the smallest environment (Grasp goals, N = 2 objects), seeded, CI-sized.

Each run evaluates before its first update (step 16) and at the end on the same 64 seeded episodes,
so the comparison isolates what training changed. One thread: the outcome of a seeded run then does not
depend on how many cores the machine has (a different thread count changes float reductions, and an RL
run amplifies that into a different trajectory).
"""

import json

import pytest

from sac_glam.config import load_config
from sac_glam.train import train

SMALLEST = [
    "env.n_objects=2", "env.goal_types=[grasp]", "env.max_steps=4", "env.n_envs=16",
    "model.tiny.d_model=32", "model.tiny.n_layers=2", "model.tiny.n_heads=4", "model.tiny.d_ff=64", "critic.width=64",
    "train.eval_episodes=64", "train.eval_splits=[train]", "train.log_every=512", "train.progress=false",
    "train.tensorboard=false", "train.threads=1", "train.checkpoint_every=0", "train.seed=0",
]  # fmt: skip


def _eval_curve(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["eval/train/success_rate"] for r in records if "eval/train/success_rate" in r]


@pytest.mark.slow
def test_sac_her_learns_the_smallest_environment(tmp_path):
    """The issue's target: at least 0.9 success on the smallest environment in a CI-sized budget."""
    cfg = load_config("sac_glam_her_cpu", [*SMALLEST, "sac.learning_starts=256", "train.total_steps=12288",
                                           "train.eval_every=12288", f"train.run_dir={tmp_path}"])  # fmt: skip
    train(cfg)
    curve = _eval_curve(tmp_path)
    assert curve[-1] >= 0.9, curve


@pytest.mark.slow
def test_ppo_improves_on_the_smallest_environment(tmp_path):
    cfg = load_config("ppo_glam_cpu", [*SMALLEST, "ppo.n_steps=512", "ppo.batch_size=128", "ppo.epochs=8",
                                       "ppo.lr=1.0e-3", "train.total_steps=6144", "train.eval_every=6144",
                                       f"train.run_dir={tmp_path}"])  # fmt: skip
    train(cfg)
    curve = _eval_curve(tmp_path)
    assert curve[-1] >= curve[0] + 0.2, curve
