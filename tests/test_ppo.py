"""PPO-GLAM: GAE against a reference loop, the clipped objective, masked entropy."""

import numpy as np
import pytest
import torch

from sac_glam.algos import ppo
from sac_glam.buffers.rollout import gae


def _reference_gae(rewards, values, terminated, truncated, final_values, last_values, gamma, lam):
    """One environment at a time, one step at a time, episode by episode (CleanRL-style loop)."""
    T, E = rewards.shape
    adv = np.zeros((T, E))
    for e in range(E):
        running = 0.0
        for t in range(T - 1, -1, -1):
            if terminated[t, e]:
                next_v, running = 0.0, 0.0
            elif truncated[t, e]:
                next_v, running = final_values[t, e], 0.0
            else:
                next_v = last_values[e] if t == T - 1 else values[t + 1, e]
            delta = rewards[t, e] + gamma * next_v - values[t, e]
            running = delta + gamma * lam * running
            adv[t, e] = running
    return adv


def test_gae_matches_reference_loop_with_terminations_and_truncations():
    rng = np.random.default_rng(0)
    T, E = 12, 4
    rewards = (rng.random((T, E)) < 0.2).astype(np.float32)
    values = rng.normal(size=(T, E)).astype(np.float32)
    terminated = rng.random((T, E)) < 0.15
    truncated = (rng.random((T, E)) < 0.1) & ~terminated
    final_values = rng.normal(size=(T, E)).astype(np.float32)
    last_values = rng.normal(size=E).astype(np.float32)
    adv, ret = gae(rewards, values, terminated, truncated, final_values, last_values, 0.99, 0.95)
    ref = _reference_gae(rewards, values, terminated, truncated, final_values, last_values, 0.99, 0.95)
    assert np.allclose(adv, ref, atol=1e-5)
    assert np.allclose(ret, ref + values, atol=1e-5)


def test_gae_truncation_bootstraps_and_termination_does_not():
    rewards = np.zeros((1, 2), np.float32)
    values = np.zeros((1, 2), np.float32)
    terminated = np.array([[True, False]])
    truncated = np.array([[False, True]])
    final_values = np.array([[5.0, 5.0]], np.float32)
    adv, _ = gae(
        rewards, values, terminated, truncated, final_values, np.array([7.0, 7.0], np.float32), 0.5, 1.0
    )
    assert adv[0, 0] == 0.0  # terminated: neither V(final) nor V(next episode) leaks in
    assert adv[0, 1] == pytest.approx(2.5)  # truncated: gamma * V(final observation), not the next episode's


def test_clipped_objective_ratio_one_is_policy_gradient():
    logp = torch.tensor([-1.0, -0.5, -2.0], requires_grad=True)
    adv = torch.tensor([1.0, -2.0, 0.5])
    loss = ppo.clipped_policy_loss(logp, logp.detach(), adv, 0.2)
    loss.backward()
    assert loss.item() == pytest.approx(-adv.mean().item())
    assert torch.allclose(logp.grad, -adv / 3)  # d/dlogp of -mean(ratio * A) at ratio 1


@pytest.mark.parametrize("log_ratio,adv,grad_zero", [
    (0.5, 1.0, True),     # ratio 1.65 > 1.2 with A > 0: no incentive to push further
    (0.5, -1.0, False),   # ratio above the range with A < 0: the unclipped term is active
    (-0.5, -1.0, True),   # ratio 0.61 < 0.8 with A < 0: clipped
    (-0.5, 1.0, False),   # ratio below the range with A > 0: still pulled back up
])  # fmt: skip
def test_clipped_objective_gradient_vanishes_only_outside_in_the_right_direction(log_ratio, adv, grad_zero):
    old = torch.tensor([-1.0])
    new = (old + log_ratio).clone().requires_grad_(True)
    ppo.clipped_policy_loss(new, old, torch.tensor([adv]), 0.2).backward()
    assert (new.grad.abs().item() == 0.0) == grad_zero


def test_value_loss_clipping():
    v, ret, old = torch.tensor([2.0]), torch.tensor([0.0]), torch.tensor([1.0])
    assert ppo.value_loss(v, ret).item() == pytest.approx(2.0)
    # clipped value 1.2 has error 1.44 < 4: the max keeps the unclipped 4
    assert ppo.value_loss(v, ret, old, 0.2).item() == pytest.approx(2.0)
    v2 = torch.tensor([0.0])
    ret2 = torch.tensor([3.0])
    # unclipped err 9, clipped value 0.8 err 4.84: max is 9
    assert ppo.value_loss(v2, ret2, old, 0.2).item() == pytest.approx(4.5)


def test_entropy_over_masked_actions_ignores_padding():
    log_pi = torch.log(torch.tensor([[0.5, 0.5, 1.0], [0.25, 0.25, 0.5]]))
    log_pi[0, 2] = 0.0  # padding entry (log pi stored as 0)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    h = ppo.masked_entropy(log_pi, mask)
    expected = (np.log(2) + (-(2 * 0.25 * np.log(0.25) + 0.5 * np.log(0.5)))) / 2
    assert h.item() == pytest.approx(expected, abs=1e-6)


def test_normalize():
    a = ppo.normalize(torch.tensor([1.0, 2.0, 3.0, 6.0]))
    assert a.mean().abs() < 1e-6 and a.std().item() == pytest.approx(1.0, abs=1e-5)
    assert ppo.normalize(torch.tensor([3.0])).item() == 0.0
