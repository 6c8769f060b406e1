"""PPO's on-policy rollout and Generalised Advantage Estimation (Schulman et al. 2016).

A rollout is ``T`` vector steps of ``E`` environments. Time-major arrays are ``(T, E)``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch


def gae(
    rewards_TE: np.ndarray,
    values_TE: np.ndarray,
    terminated_TE: np.ndarray,
    truncated_TE: np.ndarray,
    final_values_TE: np.ndarray,
    last_values_E: np.ndarray,
    gamma: float,
    lam: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Advantages and returns (both ``(T, E)``).

    After step t of env e:
    - terminated: the next value is 0 (no bootstrap) and the trace stops;
    - truncated: the episode was cut by the step limit, not ended, so the next value is V of the
      episode's final observation (``final_values_TE[t, e]``), and the trace stops (the next row
      belongs to a new episode);
    - otherwise: the next value is V(s_{t+1}) (``values_TE[t+1]``, or ``last_values_E`` after the
      rollout's last step) and the trace continues.
    """
    T = rewards_TE.shape[0]
    adv_TE = np.zeros_like(rewards_TE, dtype=np.float64)
    running_E = np.zeros(rewards_TE.shape[1], dtype=np.float64)
    for t in reversed(range(T)):
        following_E = last_values_E if t == T - 1 else values_TE[t + 1]
        next_value_E = np.where(
            terminated_TE[t], 0.0, np.where(truncated_TE[t], final_values_TE[t], following_E)
        )
        delta_E = rewards_TE[t] + gamma * next_value_E - values_TE[t]
        continues_E = ~(terminated_TE[t] | truncated_TE[t])
        running_E = delta_E + gamma * lam * continues_E * running_E
        adv_TE[t] = running_E
    return adv_TE.astype(np.float32), (adv_TE + values_TE).astype(np.float32)


class PPOBatch(NamedTuple):
    """A minibatch of on-policy transitions (B rows)."""

    prompts: list[str]
    actions: list[list[str]]
    action_ids: torch.Tensor  # (B,) int64
    old_log_probs: torch.Tensor  # (B,) log pi_old(a|s)
    old_values: torch.Tensor  # (B,) V_old(s)
    advantages: torch.Tensor  # (B,)
    returns: torch.Tensor  # (B,) advantages + old values (GAE's lambda-returns)

    def to(self, device: torch.device | str) -> PPOBatch:
        """The batch with its tensors on ``device`` (the updater's model device); texts unchanged."""
        fields: list[Any] = [f.to(device) if isinstance(f, torch.Tensor) else f for f in self]
        return PPOBatch(*fields)
