"""``sac-glam bench soak``: the memory analysis, and a few seconds of a real soak (stopped by SIGUSR1)."""

import json
import math

import pytest
from llm_fixtures import SMALL_TINY_MODEL

import sac_glam.run.train as train_module
from sac_glam.benchmarks.soak import analyse, main

TINY = ["env.n_envs=4", "env.n_objects=3", "env.max_steps=6", *SMALL_TINY_MODEL, "critic.width=32", "sac.batch_size=8", "sac.learning_starts=16",
        "sac.update_every=8", "sac.n_updates=1"]  # fmt: skip


def _samples(rss: list[float], transitions: list[float]) -> list[dict[str, float]]:
    return [
        {"t": 10.0 * i, "rss": r, "transitions": n}
        for i, (r, n) in enumerate(zip(rss, transitions, strict=True))
    ]


def test_growth_is_measured_from_the_first_full_sample() -> None:
    # Filling (0..2) grows memory; once full (3..6) a plateau, then a leak of 1 MiB per 10 s.
    plateau = analyse(_samples([100, 150, 200, 300, 300, 300, 300], [10, 50, 90, 98, 100, 99, 100]), 100)
    assert plateau["full_at_s"] == 30 and plateau["rss_at_full"] == 300 and plateau["growth_mib"] == 0
    assert plateau["peak_rss"] == 300 and plateau["late_growth_mib"] == 0
    leak = analyse(_samples([100, 300, 301, 302, 303, 304], [10, 100, 100, 100, 100, 100]), 100)
    assert leak["growth_mib"] == 4 and math.isclose(leak["growth_mib_per_h"], 4 / 40 * 3600)
    assert leak["late_growth_mib"] == 2 and leak["late_s"] == 20
    never_full = analyse(_samples([100, 200], [10, 20]), 100)
    assert math.isnan(never_full["full_at_s"]) and math.isnan(never_full["growth_mib"])


def test_a_short_soak_fills_the_buffer_and_reports_checkpoints(capsys: pytest.CaptureFixture[str]) -> None:
    log, save = train_module.MetricsLogger.log, train_module.save_checkpoint
    main(
        [
            "--json",
            "--minutes",
            "0.15",
            "--capacity",
            "200",
            "--log-every",
            "32",
            "--checkpoint-every",
            "4",
            *TINY,
        ]
    )
    out = capsys.readouterr()
    r = json.loads(out.out)  # stdout is the JSON alone: the run's lines go to stderr
    assert "SIGUSR1: checkpoint saved" in out.err  # the soak stops its run as SLURM does, by SIGUSR1
    assert train_module.MetricsLogger.log is log and train_module.save_checkpoint is save  # restored
    steps = [s["step"] for s in r["samples"]]
    assert steps == sorted(steps) and len(steps) >= 3
    assert math.isfinite(r["full_at_s"]) and max(s["transitions"] for s in r["samples"]) <= 200
    assert all(s["rss"] > 50 for s in r["samples"])
    ckpts = r["checkpoints"]
    assert len(ckpts) >= 2 and ckpts[0]["step"] == 0 and all(c["mib"] > 0 and c["seconds"] > 0 for c in ckpts)
    assert ckpts[-1]["step"] >= steps[-1]  # the SIGUSR1 checkpoint closes the run
