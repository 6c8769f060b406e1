"""``sac-glam bench train``: the presets it runs and the numbers it returns."""

from __future__ import annotations

import pytest
from llm_fixtures import SMALL_TINY_MODEL

from sac_glam.benchmarks import train as bench_train
from sac_glam.run.configs import load_config

SHRUNK = ["env.n_envs=4", *SMALL_TINY_MODEL, "critic.width=32", "sac.batch_size=8", "sac.n_updates=1"]  # fmt: skip


@pytest.mark.parametrize(("env", "config", "n_objects"), [("n3", "sac_glam_her_cpu", 3),
                                                          ("full", "sac_glam_her_full_cpu", 6)])  # fmt: skip
def test_bench_train_runs_the_chosen_environment_preset(monkeypatch, env, config, n_objects):
    loaded = []

    def spy(name, overrides):
        cfg = load_config(name, overrides)
        loaded.append((name, cfg.env.n_objects))
        return cfg

    monkeypatch.setattr(bench_train, "load_config", spy)
    row = bench_train.bench("sac_her", 96, 1, SHRUNK, env)
    assert loaded == [(config, n_objects)]
    assert row["steps"] == 96
    assert row["grad_steps"] >= 1  # updates from the first batch on
    assert row["steps_per_s"] > 0
    assert 0 < row["update"] <= 1
