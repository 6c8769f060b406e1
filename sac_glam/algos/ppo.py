"""PPO-GLAM losses (Carta et al. 2023; Schulman et al. 2017): pure functions of batched tensors.

Shapes: ``B`` transitions, ``A`` admissible actions (padded, with a mask; padded ``log_pi`` entries are 0).
"""

from __future__ import annotations

import torch


def clipped_policy_loss(
    new_log_prob_B: torch.Tensor, old_log_prob_B: torch.Tensor, advantages_B: torch.Tensor, clip_range: float
) -> torch.Tensor:
    """-E[min(r A, clip(r, 1-eps, 1+eps) A)] with r = pi_new(a|s) / pi_old(a|s)."""
    ratio_B = (new_log_prob_B - old_log_prob_B).exp()
    surrogate_B = ratio_B * advantages_B
    clipped_B = ratio_B.clamp(1.0 - clip_range, 1.0 + clip_range) * advantages_B
    return -torch.min(surrogate_B, clipped_B).mean()


def value_loss(
    values_B: torch.Tensor,
    returns_B: torch.Tensor,
    old_values_B: torch.Tensor | None = None,
    clip_range: float = 0.2,
) -> torch.Tensor:
    """0.5 E[(V - R)^2]; with ``old_values_B``, PPO2's clipped form max((V-R)^2, (V_clip-R)^2)."""
    err_B = (values_B - returns_B) ** 2
    if old_values_B is not None:
        v_clip_B = old_values_B + (values_B - old_values_B).clamp(-clip_range, clip_range)
        err_B = torch.max(err_B, (v_clip_B - returns_B) ** 2)
    return 0.5 * err_B.mean()


def masked_entropy(log_pi_BA: torch.Tensor, mask_BA: torch.Tensor) -> torch.Tensor:
    """Mean over states of H(pi(.|s)); padded actions contribute exactly 0."""
    return -(log_pi_BA.exp() * log_pi_BA * mask_BA).sum(-1).mean()


def normalize(advantages_B: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Zero mean, unit variance (a minibatch of one is only centred)."""
    centred = advantages_B - advantages_B.mean()
    if advantages_B.numel() < 2:
        return centred
    return centred / (advantages_B.std() + eps)
