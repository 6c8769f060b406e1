"""SAC-GLAM losses against direct computations (paper eq. 3, Section 2.1; Christodoulou 2019)."""

import math

import pytest
import torch

from sac_glam.algos import sac
from sac_glam.algos.accumulate import chunk_slices, chunk_weight
from sac_glam.algos.updaters import AutoAlpha, FixedAlpha


def _policy(logits_rows: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded log pi (0 at padding) and mask from ragged rows of logits."""
    A = max(len(r) for r in logits_rows)
    log_pi = torch.zeros(len(logits_rows), A)
    mask = torch.zeros(len(logits_rows), A, dtype=torch.bool)
    for i, r in enumerate(logits_rows):
        log_pi[i, : len(r)] = torch.log_softmax(torch.tensor(r), -1)
        mask[i, : len(r)] = True
    return log_pi, mask


def test_critic_target_matches_eq3_with_min_over_critics_and_masking():
    log_pi, mask = _policy([[0.0, 1.0, 2.0], [0.5, -0.5]])
    q = torch.tensor(
        [[[1.0, 2.0, 3.0], [4.0, 5.0, 99.0]], [[0.5, 2.5, 3.5], [3.0, 6.0, -99.0]]]
    )  # (K=2, B=2, A=3)
    returns = torch.tensor([0.3, 1.0])
    discounts = torch.tensor([0.99**3, 0.0])  # second window ends in a termination
    alpha = 0.1
    y = sac.critic_target(returns, discounts, log_pi, mask, q, alpha)
    # Row 0 by hand: V = sum_a pi(a) (min_k Q_k(a) - alpha log pi(a)).
    pi0 = torch.softmax(torch.tensor([0.0, 1.0, 2.0]), -1)
    qmin0 = torch.tensor([0.5, 2.0, 3.0])
    v0 = (pi0 * (qmin0 - alpha * pi0.log())).sum()
    assert y[0].item() == pytest.approx(0.3 + 0.99**3 * v0.item(), abs=1e-6)
    assert y[1].item() == pytest.approx(1.0, abs=1e-7)  # terminated: no bootstrap, padded Q=+-99 unused


def test_padding_never_reaches_the_soft_value():
    log_pi, mask = _policy([[0.0, 1.0]])
    log_pi = torch.cat([log_pi, torch.zeros(1, 1)], -1)
    mask = torch.cat([mask, torch.zeros(1, 1, dtype=torch.bool)], -1)
    q_small = torch.tensor([[[1.0, 2.0, 0.0]]])
    q_huge_pad = torch.tensor([[[1.0, 2.0, 1e6]]])
    v1 = sac.soft_state_value(log_pi, mask, q_small, 0.2)
    v2 = sac.soft_state_value(log_pi, mask, q_huge_pad, 0.2)
    assert torch.equal(v1, v2)
    assert torch.isfinite(sac.entropy(log_pi, mask)).all()


def test_boltzmann_backup_is_the_soft_value_of_p_q_and_tends_to_max_q():
    """``sac.backup=boltzmann``: V(s') = alpha logsumexp(min_k Q / alpha) = sum p_Q (Q - alpha log p_Q),
    independent of pi, padding excluded; -> max Q as alpha -> 0, above it by at most alpha log|A|."""
    log_pi, mask = _policy([[0.0, 1.0, 2.0], [0.5, -0.5]])
    q = torch.tensor(
        [[[1.0, 2.0, 3.0], [4.0, 5.0, 99.0]], [[0.5, 2.5, 3.5], [3.0, 6.0, -99.0]]]
    )  # (K=2, B=2, A=3); row 1's third action is padding
    returns, discounts, alpha = torch.tensor([0.3, 0.1]), torch.tensor([0.5, 0.25]), 0.7
    y = sac.critic_target(returns, discounts, log_pi, mask, q, alpha, backup="boltzmann")
    for row, qmin in enumerate([torch.tensor([0.5, 2.0, 3.0]), torch.tensor([3.0, 5.0])]):
        p_q = torch.softmax(qmin / alpha, -1)
        v = (p_q * (qmin - alpha * p_q.log())).sum()
        assert y[row].item() == pytest.approx(
            returns[row].item() + discounts[row].item() * v.item(), abs=1e-6
        )
    # pi plays no part: another policy gives the same target.
    other, _ = _policy([[3.0, -1.0, 0.0], [-2.0, 2.0]])
    assert torch.equal(y, sac.critic_target(returns, discounts, other, mask, q, alpha, backup="boltzmann"))
    # The policy backup differs (pi is not p_Q here), so the option is not a no-op.
    assert not torch.allclose(y, sac.critic_target(returns, discounts, log_pi, mask, q, alpha))
    for a in (1e-2, 1e-4):
        v = sac.boltzmann_state_value(mask, q, a)
        assert (v >= torch.tensor([3.0, 5.0]) - 1e-6).all()
        assert (v <= torch.tensor([3.0, 5.0]) + a * math.log(3) + 1e-6).all()


def test_critic_loss_is_mse_of_taken_action_summed_over_critics():
    q = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0], [1.0, 1.0]]], requires_grad=True)
    acts = torch.tensor([1, 0])
    y = torch.tensor([1.5, 2.0])
    loss = sac.critic_loss(q, acts, y)
    expected = ((2.0 - 1.5) ** 2 + (3.0 - 2.0) ** 2) / 2 + ((1.0 - 1.5) ** 2 + (1.0 - 2.0) ** 2) / 2
    assert loss.item() == pytest.approx(expected)
    loss.backward()
    assert q.grad is not None and q.grad[0, 0, 0] == 0  # untaken action gets no gradient


def test_actor_loss_direct_and_q_not_differentiated():
    logits = torch.tensor([[0.2, -0.1, 0.4]], requires_grad=True)
    log_pi = torch.log_softmax(logits, -1)
    mask = torch.ones(1, 3, dtype=torch.bool)
    q = torch.tensor([[[1.0, 0.0, 2.0]]], requires_grad=True)
    alpha = 0.3
    loss = sac.actor_loss(log_pi, mask, q, alpha)
    pi = log_pi.exp()
    direct = (pi * (alpha * log_pi - q[0])).sum()
    assert loss.item() == pytest.approx(direct.item(), abs=1e-6)
    loss.backward()
    assert q.grad is None  # Q is detached inside the actor loss
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    # Gradient descent on the actor loss moves probability toward the highest-Q action.
    with torch.no_grad():
        new = torch.softmax(logits - 0.5 * logits.grad, -1)
    assert new[0, 2] > pi[0, 2]


def test_forward_kl_actor_loss_direct_masked_and_minimised_by_the_boltzmann_policy():
    log_pi, mask = _policy([[0.2, -0.1, 0.4], [1.0, 0.0]])
    q = torch.tensor([[[1.0, 0.0, 2.0], [0.3, 0.1, 0.0]], [[0.5, 0.2, 2.5], [0.2, 0.4, 1e6]]])
    alpha = 0.3
    loss = sac.actor_loss_forward_kl(log_pi, mask, q, alpha)
    # Row by row with min over critics; the padded Q = 1e6 of row 1 must not count.
    direct = 0.0
    for i, (qmin, n) in enumerate([(torch.tensor([0.5, 0.0, 2.0]), 3), (torch.tensor([0.2, 0.1]), 2)]):
        direct += -(torch.softmax(qmin / alpha, -1) * log_pi[i, :n]).sum().item() / 2
    assert loss.item() == pytest.approx(direct, abs=1e-6)
    # Its minimiser over pi is p_Q itself (the gradient on the scores is pi - p_Q).
    logits = torch.log(torch.softmax(torch.tensor([[0.5, 0.0, 2.0]]) / alpha, -1)).requires_grad_()
    sac.actor_loss_forward_kl(torch.log_softmax(logits, -1), torch.ones(1, 3, dtype=torch.bool),
                              torch.tensor([[[0.5, 0.0, 2.0]]]), alpha).backward()  # fmt: skip
    assert logits.grad is not None and logits.grad.abs().max() < 1e-6


def test_forward_kl_still_moves_a_saturated_policy_that_the_paper_loss_leaves():
    """Why ``sac.actor_loss: forward_kl`` exists: pi has put all its mass on the worst action."""
    q = torch.tensor([[[1.0, 0.0, 0.9]]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    grads = {}
    for name, fn in [("reverse", sac.actor_loss), ("forward", sac.actor_loss_forward_kl)]:
        logits = torch.tensor([[0.0, 12.0, 0.0]], requires_grad=True)  # pi(worst) = 0.99999
        fn(torch.log_softmax(logits, -1), mask, q, 0.05).backward()
        assert logits.grad is not None
        grads[name] = logits.grad.abs().max().item()
    assert grads["reverse"] < 1e-3 and grads["forward"] > 0.5


@pytest.mark.parametrize("entropy_value,target,direction", [(1.0, 0.1, -1), (0.05, 0.5, +1)])
def test_alpha_moves_entropy_toward_target(entropy_value, target, direction):
    auto = AutoAlpha(init=0.05, target_entropy=target, lr=0.01)
    before = auto.value
    auto.update(torch.full((4,), entropy_value), torch.full((4,), 3))
    # Entropy above target -> alpha decreases (less bonus, entropy falls); below -> alpha increases.
    assert math.copysign(1, auto.value - before) == direction


def test_alpha_fraction_mode_scales_target_with_log_actions():
    auto = AutoAlpha(init=0.05, target_entropy=0.5, lr=0.01, mode="fraction")
    assert torch.allclose(auto.targets(torch.tensor([4, 8])), 0.5 * torch.log(torch.tensor([4.0, 8.0])))
    fixed = FixedAlpha(0.01)
    assert fixed.update(torch.ones(2), torch.full((2,), 4)) == 0.0 and fixed.value == 0.01


def test_chunk_slices_cover_the_batch_once():
    for n, c in [(10, 4), (256, 256), (257, 64), (1, 8), (0, 3)]:
        slices = chunk_slices(n, c)
        rows = [i for s in slices for i in range(s.start, s.stop)]
        assert rows == list(range(n))
        assert all(s.stop - s.start <= c for s in slices)
        assert sum(chunk_weight(s, n) for s in slices) == pytest.approx(1.0 if n else 0.0)
    with pytest.raises(ValueError):
        chunk_slices(4, 0)


def test_accumulated_gradient_equals_full_batch_gradient():
    torch.manual_seed(0)
    w = torch.randn(5, requires_grad=True)
    x, y = torch.randn(10, 5), torch.randn(10)
    ((x @ w - y) ** 2).mean().backward()
    full = w.grad.clone()
    w.grad = None
    for s in chunk_slices(10, 3):
        (chunk_weight(s, 10) * ((x[s] @ w - y[s]) ** 2).mean()).backward()
    assert torch.allclose(w.grad, full, atol=1e-6)
