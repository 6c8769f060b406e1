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


def test_bench_train_alternates_variants_in_turn_and_gives_ratios_to_the_first(monkeypatch, capsys):
    calls = []

    def fake_bench(preset, steps, threads, extra, env="n3"):
        calls.append((preset, extra[-1]))
        return {"steps_per_s": 10.0 if extra[-1] == "train.parallel_llms=false" else 15.0}

    monkeypatch.setattr(bench_train, "bench", fake_bench)
    bench_train.main(["--presets", "sac_her", "--rounds", "2", "x=1", "--alternate",
                      "train.parallel_llms=false", "train.parallel_llms=true"])  # fmt: skip
    assert calls == [("sac_her", "train.parallel_llms=false"), ("sac_her", "train.parallel_llms=true")] * 2
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("sac_her ")]
    assert [(r[2], r[-2], r[-1]) for r in rows] == [("train.parallel_llms=false", "10.0", "1.00"),
                                                    ("train.parallel_llms=true", "15.0", "1.50")]  # fmt: skip


def test_bench_train_alternate_refuses_a_variant_that_is_not_an_override(capsys):
    with pytest.raises(SystemExit):
        bench_train.main(["--alternate", "-", "parallel"])
    assert "--alternate 'parallel' is not key=value or -" in capsys.readouterr().err


def test_steady_state_starts_at_the_first_gradient_step():
    """SAC's warm-up (episodes still filling the buffer: acting only) is left out of the rate: 300
    transitions in 3 s of warm-up, then 700 in 14 s of learning: 50/s, against 1,000 / 17 s overall."""
    records = [
        {"step": 100, "time/wall_s": 1.0, "time/act_s": 1.0, "time/update_s": 0.0, "train/grad_steps": 0},
        {"step": 300, "time/wall_s": 3.0, "time/act_s": 3.0, "time/update_s": 0.0, "train/grad_steps": 0},
        {"step": 600, "time/wall_s": 9.0, "time/act_s": 4.0, "time/update_s": 5.0, "train/grad_steps": 4},
        {"step": 1000, "time/wall_s": 17.0, "time/act_s": 5.0, "time/update_s": 12.0, "train/grad_steps": 8},
    ]
    row = bench_train.steady_state(records)
    assert row["steps_per_s"] == pytest.approx(700 / 14) and row["warmup_steps"] == 300
    assert row["steps_per_s_overall"] == pytest.approx(1000 / 17)
    assert row["update"] == pytest.approx(12 / 14) and row["act"] == pytest.approx(2 / 14)
    whole = bench_train.steady_state(records, from_first_update=False)  # PPO: whole cycles
    assert whole["steps_per_s"] == pytest.approx(1000 / 17) and whole["warmup_steps"] == 0
    with pytest.raises(ValueError, match="no gradient step in 300 transitions"):
        bench_train.steady_state(records[:2])
