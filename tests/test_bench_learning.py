"""``sac-glam bench learning``: seed ranges, the summary, and that each learning test's configuration loads
with the run's seed, threads and directory in place (the runs themselves: tests/test_learning.py)."""

from __future__ import annotations

import pytest

from sac_glam.benchmarks import learning
from sac_glam.run.configs import load_config


def test_parse_seeds() -> None:
    assert learning.parse_seeds(["0-2", "5", "1"]) == [0, 1, 2, 5]
    with pytest.raises(SystemExit, match="--seeds: 'a-b' is not a seed or a range like 0-9"):
        learning.parse_seeds(["a-b"])


def test_summary() -> None:
    stats = learning.summary([0.5, 1.0, 0.75, 0.25])
    assert stats == {"n": 4.0, "min": 0.25, "median": 0.625, "mean": 0.625, "std": pytest.approx(0.2795, abs=1e-4),
                     "max": 1.0}  # fmt: skip


@pytest.mark.parametrize("test", sorted(learning.LEARNING_TESTS))
def test_configs_load_with_the_run_overrides(test: str) -> None:
    config, _ = learning.LEARNING_TESTS[test]
    cfg = load_config(config, learning.overrides_of(test, 7, 2, "/tmp/x", ["train.eval_episodes=32"]))
    assert (cfg.train.seed, cfg.train.threads, cfg.train.run_dir) == (7, 2, "/tmp/x")
    assert cfg.train.eval_episodes == 32  # the extra overrides come last, so they win
    assert (cfg.env.n_objects, cfg.env.goal_types, cfg.train.eval_every) == (
        2,
        ["grasp"],
        cfg.train.total_steps,
    )
