"""Discrete SAC losses for an LLM policy over admissible actions (paper Section 2; Christodoulou 2019).

Pure functions of batched tensors. Shapes: ``B`` transitions, ``A`` admissible actions (padded, with a
mask), ``K`` critics. Padded entries of ``log_pi_BA`` are 0 (never -inf) and are removed by ``mask_BA``
*before* any product, so a padded action never reaches a loss or a metric (style point 3).

Because the action set is discrete and small, every expectation over actions is computed exactly from
pi instead of by sampling (CleanRL's ``sac_atari.py`` does the same).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch


def masked_probs(log_pi_BA: torch.Tensor, mask_BA: torch.Tensor) -> torch.Tensor:
    """pi with padded actions set to exactly 0."""
    return log_pi_BA.exp() * mask_BA


def entropy(log_pi_BA: torch.Tensor, mask_BA: torch.Tensor) -> torch.Tensor:
    """H(pi(.|s)) = -sum_a pi(a|s) log pi(a|s) over admissible actions, shape (B,)."""
    pi_BA = masked_probs(log_pi_BA, mask_BA)
    return -(pi_BA * (log_pi_BA * mask_BA)).sum(-1)


def soft_state_value(
    log_pi_BA: torch.Tensor, mask_BA: torch.Tensor, q_KBA: torch.Tensor, alpha: float | torch.Tensor
) -> torch.Tensor:
    """V(s) = sum_a pi(a|s) [min_k Q_k(s,a) - alpha log pi(a|s)], the expectation inside eq. 3, shape (B,).

    Taking the min over K critics is clipped double Q (Fujimoto et al. 2018); with K = 1 it is Q itself.
    """
    q_BA = q_KBA.min(dim=0).values
    pi_BA = masked_probs(log_pi_BA, mask_BA)
    return (pi_BA * (q_BA - alpha * log_pi_BA) * mask_BA).sum(-1)


def boltzmann_state_value(
    mask_BA: torch.Tensor, q_KBA: torch.Tensor, alpha: float | torch.Tensor
) -> torch.Tensor:
    """V(s) = alpha log sum_a exp(min_k Q_k(s,a) / alpha) over admissible actions, shape (B,).

    The soft value of the critic's own Boltzmann policy p_Q = softmax(Q / alpha): sum_a p_Q(a) [Q(s,a)
    - alpha log p_Q(a)] equals this log-sum-exp exactly (soft Q-learning's backup, Haarnoja et al.
    2017). It is :func:`soft_state_value` with pi replaced by the policy the actor is trained toward, and
    tends to max_a Q(s,a) as alpha -> 0. Worked example: Q = (0.3, 0.2), alpha = 0.1 gives
    0.1 log(e^3 + e^2) = 0.331 = E_{p_Q}[Q] (0.273, p_Q = (0.73, 0.27)) + alpha H(p_Q) (0.058).
    """
    q_BA = q_KBA.min(dim=0).values.masked_fill(~mask_BA, -torch.inf)
    return alpha * torch.logsumexp(q_BA / alpha, dim=-1)


Backup = Literal["policy", "boltzmann"]


def critic_target(
    returns_B: torch.Tensor,
    discounts_B: torch.Tensor,
    next_log_pi_BA: torch.Tensor,
    next_mask_BA: torch.Tensor,
    next_target_q_KBA: torch.Tensor,
    alpha: float | torch.Tensor,
    backup: Backup = "policy",
) -> torch.Tensor:
    """The n-step soft target of eq. 3, shape (B,).

    y = sum_{i<k} gamma^i r_{t+i} + gamma^k * E_{a'~pi}[Q_targ(s_{t+k}, a') - alpha log pi(a'|s_{t+k})]

    ``returns_B`` holds the discounted reward sum and ``discounts_B`` gamma^k, already 0 where the
    episode terminated inside the window (a truncation still bootstraps: the buffer decides this).
    ``backup="boltzmann"`` takes the expectation under p_Q = softmax(Q_targ / alpha) instead of pi
    (:func:`boltzmann_state_value`; ``sac.backup``): the value of the policy the actor is trained
    toward, without the actor's lag.
    """
    with torch.no_grad():
        if backup == "boltzmann":
            v_next_B = boltzmann_state_value(next_mask_BA, next_target_q_KBA, alpha)
        else:
            v_next_B = soft_state_value(next_log_pi_BA, next_mask_BA, next_target_q_KBA, alpha)
        return returns_B + discounts_B * v_next_B


def critic_loss(q_KBA: torch.Tensor, action_ids_B: torch.Tensor, target_B: torch.Tensor) -> torch.Tensor:
    """Sum over the K critics of the mean squared TD error of the taken action's Q-value."""
    idx_KB1 = action_ids_B.view(1, -1, 1).expand(q_KBA.shape[0], -1, 1)
    q_taken_KB = q_KBA.gather(-1, idx_KB1).squeeze(-1)
    return ((q_taken_KB - target_B.detach().unsqueeze(0)) ** 2).mean(dim=1).sum()


def actor_loss(
    log_pi_BA: torch.Tensor, mask_BA: torch.Tensor, q_KBA: torch.Tensor, alpha: float | torch.Tensor
) -> torch.Tensor:
    """E_s[ sum_a pi(a|s) (alpha log pi(a|s) - min_k Q_k(s,a)) ], Q not differentiated.

    This is -V(s) of :func:`soft_state_value` with Q detached: the actor maximises the soft value.
    """
    return -soft_state_value(log_pi_BA, mask_BA, q_KBA.detach(), alpha).mean()


def actor_loss_forward_kl(
    log_pi_BA: torch.Tensor, mask_BA: torch.Tensor, q_KBA: torch.Tensor, alpha: float | torch.Tensor
) -> torch.Tensor:
    """E_s[ -sum_a p_Q(a|s) log pi(a|s) ], p_Q = softmax(min_k Q_k(s,.) / alpha) over admissible actions.

    The other direction of the KL that :func:`actor_loss` minimises (``sac.actor_loss: forward_kl``; not
    the paper's). Both are minimised by the critic's Boltzmann policy p_Q, but their gradients with
    respect to the score z_b of action b differ. The paper's, with f = alpha log pi - Q, is
    pi(b) (f(b) - E_pi f): it vanishes wherever pi has saturated on one action, even a wrong one. This
    one is pi(b) - p_Q(b): a cross-entropy toward what the critic prefers (as in MPO's policy step),
    which does not. README, "CPU presets", measures why this matters for a small random policy.
    """
    q_BA = q_KBA.detach().min(dim=0).values
    p_q_BA = torch.softmax((q_BA / alpha).masked_fill(~mask_BA, -torch.inf), dim=-1)
    return -(p_q_BA * (log_pi_BA * mask_BA)).sum(-1).mean()


def alpha_loss(
    log_alpha: torch.Tensor, entropy_B: torch.Tensor, target_entropy_B: torch.Tensor
) -> torch.Tensor:
    """Automatic entropy tuning (Haarnoja et al. 2018b, discrete form).

    d loss / d log_alpha = mean(H - H_target): when the policy is more random than the target,
    log alpha decreases, which lowers the entropy bonus and lets the entropy fall toward the target.
    """
    return (log_alpha * (entropy_B - target_entropy_B).detach()).mean()


class SACLosses(NamedTuple):
    """The three SAC losses of one batch and the numbers logged with them."""

    critic: torch.Tensor
    actor: torch.Tensor
    alpha: torch.Tensor
    entropy_B: torch.Tensor
    q_taken_B: torch.Tensor
    target_B: torch.Tensor
