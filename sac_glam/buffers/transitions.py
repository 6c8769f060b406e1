"""What goes into the SAC replay buffer and what comes out: :class:`Episode` and :class:`SACBatch`.

The contract of :class:`~sac_glam.buffers.replay.ReplayBuffer` (style point 5): the training loop adds
finished :class:`Episode` s (``add_episode``) and the SAC updater consumes :class:`SACBatch` es
(``sample``). They live apart from the buffer's storage and n-step logic so that the contract reads on
one screen, and what each field holds (shapes, the terminated/truncated rule) is stated once;
``sac_glam.buffers.replay`` re-exports both, so ``from sac_glam.buffers.replay import Episode, SACBatch``
keeps working.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch


@dataclass
class Episode:
    """One finished episode, as the training loop collects it (observations hold no goal).

    ``T`` transitions: ``(o_t, a_t, r_t, o_{t+1})`` for ``t < T``. When both ``terminated`` and
    ``truncated`` are set (success on the last allowed step), termination wins: success is terminal.
    """

    goal: str
    """The goal pursued."""
    observations: list[str]
    """T+1 scene texts o_0..o_T; o_T is the observation after the last step."""
    actions: list[list[str]]
    """T+1 admissible action lists, one per observation."""
    action_ids: np.ndarray
    """(T,) int64: index into ``actions[t]`` of the action taken at t."""
    rewards: np.ndarray
    """(T,) float32."""
    terminated: bool
    """Ended by success: never bootstrap past the end."""
    truncated: bool
    """Hit the step limit: bootstrap from o_T (a truncation is not a terminal state)."""
    hindsight: dict[str, int] = field(default_factory=dict)
    """Social partner: goal text -> transition index t at which it was first achieved."""

    def __len__(self) -> int:
        return len(self.action_ids)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first inconsistent field."""
        n = len(self.action_ids)
        if n == 0:
            raise ValueError("episode has no transitions (action_ids is empty)")
        if np.ndim(self.action_ids) != 1 or np.shape(self.rewards) != (n,):
            raise ValueError(
                f"episode arrays disagree: action_ids shape {np.shape(self.action_ids)}, "
                f"rewards shape {np.shape(self.rewards)}; both must be (T,)"
            )
        if len(self.observations) != n + 1 or len(self.actions) != n + 1:
            raise ValueError(
                f"episode with T={n} transitions needs T+1={n + 1} observations and action lists "
                f"(o_0..o_T), got {len(self.observations)} observations and {len(self.actions)} action lists"
            )
        sizes = np.array([len(a) for a in self.actions[:n]])
        ids = np.asarray(self.action_ids)
        bad = np.flatnonzero((ids < 0) | (ids >= sizes))
        if bad.size:
            t = int(bad[0])
            raise ValueError(f"action_ids[{t}]={ids[t]} is not an index of actions[{t}] ({sizes[t]} actions)")
        if not (self.terminated or self.truncated):
            raise ValueError("episode neither terminated nor truncated: store episodes only when they end")


class SACBatch(NamedTuple):
    """A batch of B n-step transitions for the SAC critic target (eq. 3) and actor loss."""

    prompts: list[str]
    """(B,) prompts at s_t, rendered with the (relabelled) goal."""
    actions: list[list[str]]
    """(B,) admissible actions at s_t."""
    action_ids: torch.Tensor
    """(B,) int64: index into ``actions[b]`` of the action taken."""
    returns: torch.Tensor
    """(B,) float32: sum_{i<k} gamma^i r_{t+i}, k = min(n, T_end - t)."""
    next_prompts: list[str]
    """(B,) prompts at s_{t+k}. Where ``discounts`` is 0 this is still a valid prompt (o_{t+k}) whose
    value is multiplied by 0, so the target needs no special case."""
    next_actions: list[list[str]]
    """(B,) admissible actions at s_{t+k}."""
    discounts: torch.Tensor
    """(B,) float32: gamma^k if the target bootstraps, 0 if the episode (or HER copy) terminated in the window."""
    is_her: torch.Tensor
    """(B,) bool: the transition comes from a HER copy."""
    goal_types: list[str]
    """(B,) goal type of the (relabelled) goal."""
    returns_to_go: torch.Tensor
    """(B,) float32: sum_{i >= 0} gamma^i r_{t+i} up to the end of the episode or HER copy, no bootstrap.
    With non-negative rewards a lower bound of Q*(s_t, a_t) (``sac.target_lower_bound``)."""

    def to(self, device: torch.device | str) -> SACBatch:
        """The batch with its tensors on ``device`` (the updater's model device); texts unchanged."""
        fields: list[Any] = [f.to(device) if isinstance(f, torch.Tensor) else f for f in self]
        return SACBatch(*fields)
