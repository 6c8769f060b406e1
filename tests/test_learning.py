"""Learning on the smallest environment (Grasp goals, N = 2 objects), over seeds, CI-sized.

A seeded one-thread run is deterministic on one machine, but another CPU's float kernels (or another
thread count) give another trajectory, and RL amplifies the difference: one seed passing says little
about the method. Each test therefore runs ``SEEDS`` (each in its own process with one thread, side by
side: ``sac_glam.benchmarks.learning``, which also holds the runs' exact configuration) and asserts on the
*worst* of them, against thresholds that every measured run cleared: ``docs/robustness.md`` has the spread
(``sac-glam bench learning``), the thresholds beside it, and the runs showing that a broken learner fails.

Each run evaluates before its first update (step 16) and at the end on the same seeded episodes (256 for
SAC-GLAM+HER, 64 for PPO-GLAM).
``LEARNING_TEST_OVERRIDES="sac.actor_lr=0.0"`` (any key=value list) reruns the tests with those overrides
on top: how the broken-learner check of ``docs/robustness.md`` is reproduced.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sac_glam.benchmarks.actor_critic import diagnose
from sac_glam.benchmarks.learning import run_seeds

SEEDS = [0, 1]
EXTRA = os.environ.get("LEARNING_TEST_OVERRIDES", "").split()

# SAC-GLAM+HER, per seed (docs/robustness.md, "The learning tests"). With the test's configuration (the
# preset's model, text-pretrained; target entropy 0.2 log|A|; batch 128, actor lr 1e-3), pi's final eval
# success on 256 episodes over 10 seeds was 0.93-0.98 on one thread and 0.92-0.96 on two (untrained: 0.00),
# and the critic acting greedily (argmax min_k Q, same checkpoint) succeeded in 0.91-1.00 of 64 episodes.
SAC_MIN_SUCCESS = 0.85
SAC_MIN_CRITIC_SUCCESS = 0.8
#: PPO-GLAM: the worst gain of evaluation success over the untrained policy (docs/robustness.md).
PPO_MIN_GAIN = 0.2


def _curves(test: str, tmp_path: Path) -> dict[int, list[float]]:
    rows = run_seeds(test, SEEDS, threads=1, base=tmp_path, extra=EXTRA, jobs=len(SEEDS))
    errors = [row["error"] for row in rows if "error" in row]
    assert not errors, errors
    return {row["seed"]: row["curve"] for row in rows}


@pytest.mark.slow
def test_sac_her_learns_the_smallest_environment(tmp_path: Path) -> None:
    """Every seed's critic ranks actions well enough to act on, and its policy follows it well past the
    untrained one's 0.0 (a random model's ~0.25) and the 0.5 of "go to either object, then grasp": every
    one of 20 measured runs ended at 0.9 or above, the threshold sits below them by a margin."""
    curves = _curves("sac_her", tmp_path)
    critic = {s: diagnose(tmp_path / f"seed{s}", episodes=64, n_states=50, seed=12345) for s in SEEDS}
    summary = {s: (curves[s], round(critic[s]["success/argmax_q"], 3)) for s in SEEDS}
    assert min(c[-1] for c in curves.values()) >= SAC_MIN_SUCCESS, summary
    assert min(d["success/argmax_q"] for d in critic.values()) >= SAC_MIN_CRITIC_SUCCESS, summary


@pytest.mark.slow
def test_ppo_improves_on_the_smallest_environment(tmp_path: Path) -> None:
    curves = _curves("ppo", tmp_path)
    assert min(curve[-1] - curve[0] for curve in curves.values()) >= PPO_MIN_GAIN, curves
