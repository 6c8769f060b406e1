"""Learning on the smallest environment (Grasp goals, N = 2 objects), over seeds, CI-sized.

A seeded one-thread run is deterministic on one machine, but another CPU's float kernels (or another
thread count) give another trajectory, and RL amplifies the difference: one seed passing says little
about the method. Each test therefore runs ``SEEDS`` (each in its own process with one thread, side by
side: ``sac_glam.benchmarks.learning``, which also holds the runs' exact configuration) and asserts on the
*worst* of them, against a threshold that every run measured on 10 seeds, on 1 and 2 threads, cleared by a
margin. ``docs/robustness.md`` has that spread (``sac-glam bench learning``), the thresholds beside it, and
the runs that show a broken learner fails them.

Each run evaluates before its first update (step 16) and at the end on the same 64 seeded episodes.
``LEARNING_TEST_OVERRIDES="sac.actor_lr=0.0"`` (any key=value list) reruns the tests with those overrides
on top: how the broken-learner check of ``docs/robustness.md`` is reproduced.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sac_glam.benchmarks.learning import run_seeds

SEEDS = [0, 1]
EXTRA = os.environ.get("LEARNING_TEST_OVERRIDES", "").split()

#: Worst final evaluation success over SEEDS. docs/robustness.md: the 20 measured runs (10 seeds x 1 and
#: 2 threads) of this configuration ended at 0.92-1.0; the old presets' runs at 0.48-0.91.
SAC_MIN_SUCCESS = 0.85
#: Worst gain of evaluation success over the untrained policy, over SEEDS (PPO's runs: docs/robustness.md).
PPO_MIN_GAIN = 0.2


def _curves(test: str, tmp_path: Path) -> dict[int, list[float]]:
    rows = run_seeds(test, SEEDS, threads=1, base=tmp_path, extra=EXTRA, jobs=len(SEEDS))
    errors = [row["error"] for row in rows if "error" in row]
    assert not errors, errors
    return {row["seed"]: row["curve"] for row in rows}


@pytest.mark.slow
def test_sac_her_learns_the_smallest_environment(tmp_path: Path) -> None:
    """The issue's target with a margin: every seed ends well above the untrained policy's ~0.25."""
    curves = _curves("sac_her", tmp_path)
    assert min(curve[-1] for curve in curves.values()) >= SAC_MIN_SUCCESS, curves


@pytest.mark.slow
def test_ppo_improves_on_the_smallest_environment(tmp_path: Path) -> None:
    curves = _curves("ppo", tmp_path)
    assert min(curve[-1] - curve[0] for curve in curves.values()) >= PPO_MIN_GAIN, curves
