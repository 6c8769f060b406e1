"""``train.parallel_llms``: the policy and critic LLMs' passes of a SAC update on two threads
(``sac_glam/llm/lanes.py``), exact against running them one after the other."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from sac_glam.benchmarks.scaling import fill_buffer, make_config
from sac_glam.llm.lanes import Lanes, make_lanes
from sac_glam.run.factory import make_agent, make_updater

FULL_ENV = ["env.n_objects=6", "env.sequential_goals=true", "env.max_steps=15", "env.n_envs=8"]


@pytest.fixture
def restore_threads():
    saved = torch.get_num_threads()
    yield
    torch.set_num_threads(saved)


def _train(overrides: list[str], lanes: bool, updates: int = 3):
    """Stats and final weights of ``updates`` SAC updates on the same sampled batches: with lanes (2
    threads split into 1 + 1) or without (both LLMs one after the other on 1 thread)."""
    torch.set_num_threads(2 if lanes else 1)
    cfg = make_config([*FULL_ENV, "sac.batch_size=16", f"train.parallel_llms={lanes}", *overrides])
    buffer = fill_buffer(cfg, 8, seed=0)
    agent = make_agent(cfg)
    assert (agent.lanes is not None) == lanes
    before = {k: v.clone() for k, v in agent.state_dict().items()}
    updater = make_updater(cfg, agent)
    rng = np.random.default_rng(0)
    stats = [updater.update(buffer.sample(16, rng)) for _ in range(updates)]
    return stats, before, agent.state_dict()


@pytest.mark.parametrize(
    "overrides",
    [[], ["critic.target=network"], ["sac.warmup_updates=2"]],
    ids=["default", "target-network", "warmup"],
)
def test_lanes_update_equals_sequential_to_the_bit(overrides, restore_threads):
    """Every logged number and every weight after 3 updates is identical with and without lanes, and
    the updates moved both LLMs (a lane that skipped its forward or backward would show)."""
    stats_seq, before, after_seq = _train(overrides, lanes=False)
    stats_par, _, after_par = _train(overrides, lanes=True)
    np.testing.assert_equal(stats_par, stats_seq)  # exact, NaN (the warm-up's actor loss) equal to NaN
    assert after_par.keys() == after_seq.keys()
    for key in after_seq:
        assert torch.equal(after_par[key], after_seq[key]), key
    moved = {k.split(".")[0] for k in after_seq if not torch.equal(after_seq[k], before[k])}
    assert {"critic_llm", "q"} <= moved
    if "sac.warmup_updates=2" not in overrides:
        assert "llm" in moved


def test_lanes_run_concurrently_with_the_callers_grad_mode(restore_threads):
    torch.set_num_threads(2)
    lanes = Lanes(1, 1)
    try:
        started = threading.Event()

        def side() -> tuple[bool, int, int]:
            started.set()
            return torch.is_grad_enabled(), threading.get_ident(), torch.get_num_threads()

        def main() -> tuple[bool, int]:  # returns only once the side lane has started: the two overlap
            return started.wait(timeout=10), torch.get_num_threads()

        with torch.no_grad():
            (overlapped, main_threads), (grad, ident, side_threads) = lanes.run(main, side)
        assert overlapped and not grad and ident != threading.get_ident()
        assert (main_threads, side_threads) == (1, 1)
        assert torch.get_num_threads() == 2  # the caller's own count again after the run
        _, (grad, _, _) = lanes.run(lambda: None, side)
        assert grad
    finally:
        lanes.close()


def test_lanes_wait_for_the_side_lane_when_the_main_one_fails():
    lanes = Lanes(1, 1)
    done = threading.Event()

    def side() -> None:
        threading.Event().wait(0.2)
        done.set()

    def main() -> None:
        raise RuntimeError("main lane failed")

    try:
        with pytest.raises(RuntimeError, match="main lane failed"):
            lanes.run(main, side)
        assert done.is_set()
        with pytest.raises(ValueError, match="side lane failed"):
            lanes.run(lambda: None, lambda: (_ for _ in ()).throw(ValueError("side lane failed")))
    finally:
        lanes.close()


@pytest.mark.parametrize(
    ("threads", "device", "separate", "enabled", "expect"),
    [
        (2, "cpu", True, True, (1, 1)),
        (3, "cpu", True, True, (2, 1)),
        (1, "cpu", True, True, None),
        (2, "cpu", False, True, None),
        (2, "cpu", True, False, None),
        (2, "cuda", True, True, None),
    ],
)
def test_make_lanes_only_where_they_can_help(threads, device, separate, enabled, expect, restore_threads):
    torch.set_num_threads(threads)
    lanes = make_lanes(torch.device(device), separate, enabled)
    if expect is None:
        assert lanes is None and torch.get_num_threads() == threads
    else:
        assert lanes is not None
        assert (lanes.main_threads, lanes.side_threads) == expect
        assert torch.get_num_threads() == threads
        lanes.close()
