"""Critic and value heads on the LLM's hidden states (Section 2.2, Appendices B and C), and Polyak.

Two critic inputs (Appendix B), each a small strategy object with the same call signature:

- :class:`ActionInputQ` (``prompt_action``, the paper's best): Q(s, a) = MLP(h(prompt + a)), one output,
  read from ``ActionForward.action_hidden_BAH`` (the state after the LLM read prompt and whole action).
- :class:`PromptInputQ` (``prompt``): MLP(h(prompt)) -> one Q per entry of the environment's full
  action vocabulary (``ALL_ACTIONS``, DQN-style), gathered at each state's admissible actions.

Both hold K independent heads (K = 2: clipped double Q). Whether gradients reach the LLM is decided
by the caller (``LLMAgent`` detaches the hidden state when ``backprop_llm`` is False).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import torch
from torch import Tensor, nn


class MLPHead(nn.Module):
    """``in_dim -> width -> width -> out_dim`` with ReLU (Appendix C: two hidden layers of 1024)."""

    def __init__(self, in_dim: int, width: int = 1024, out_dim: int = 1):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, width),
            nn.ReLU(),
            nn.Linear(width, width),
            nn.ReLU(),
            nn.Linear(width, out_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.net(x)
        return out


def polyak_update(online_params: Iterable[Tensor], target_params: Iterable[Tensor], tau: float) -> None:
    """``target <- tau * online + (1 - tau) * target``, in place and without gradients.

    Zips strictly (SB3's ``polyak_update``): a length mismatch between the two lists is a bug (a
    parameter missing from one network) and raises instead of silently updating a prefix.
    """
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must be in [0, 1], got {tau}")
    with torch.no_grad():
        for online, target in zip(online_params, target_params, strict=True):
            if online.shape != target.shape:
                raise ValueError(f"shape mismatch in polyak_update: {online.shape} vs {target.shape}")
            target.mul_(1.0 - tau).add_(online.to(target.dtype), alpha=tau)


class ActionInputQ(nn.Module):
    """K heads Q_k(s, a) = MLP_k(action_hidden) -> (K, B, A); padded actions get 0."""

    hidden: Literal["action", "prompt"] = "action"

    def __init__(self, hidden_size: int, width: int, n_critics: int):
        super().__init__()
        self.heads = nn.ModuleList(MLPHead(hidden_size, width, 1) for _ in range(n_critics))

    def forward(self, hidden: Tensor, mask_BA: Tensor, action_index_BA: Tensor | None = None) -> Tensor:
        """``hidden``: (B, A, H) action hidden states -> (K, B, A)."""
        q_KBA = torch.stack([head(hidden).squeeze(-1) for head in self.heads])
        return torch.where(mask_BA, q_KBA, 0.0)


class PromptInputQ(nn.Module):
    """K heads MLP_k(prompt_hidden) -> one Q per entry of ``all_actions``, gathered -> (K, B, A)."""

    hidden: Literal["action", "prompt"] = "prompt"

    def __init__(self, hidden_size: int, width: int, n_critics: int, all_actions: Sequence[str]):
        super().__init__()
        self.all_actions = tuple(all_actions)
        self.action_to_index = {a: i for i, a in enumerate(self.all_actions)}
        self.heads = nn.ModuleList(
            MLPHead(hidden_size, width, len(self.all_actions)) for _ in range(n_critics)
        )

    def action_indices(self, actions: list[list[str]], device: torch.device | None = None) -> Tensor:
        """(B, A) long: each admissible action's index in ``all_actions`` (0 where padded)."""
        width = max(len(acts) for acts in actions)
        out = torch.zeros(len(actions), width, dtype=torch.long)
        for b, acts in enumerate(actions):
            try:
                out[b, : len(acts)] = torch.tensor([self.action_to_index[a] for a in acts], dtype=torch.long)
            except KeyError as e:
                raise KeyError(
                    f"action {e.args[0]!r} is not in the critic's action vocabulary ({len(self.all_actions)} "
                    f"actions, e.g. {self.all_actions[:3]}): the 'prompt'-input critic has one output per "
                    f"known action and cannot value an unknown one; use critic.input='prompt_action'"
                ) from None
        return out if device is None else out.to(device)

    def forward(self, hidden: Tensor, mask_BA: Tensor, action_index_BA: Tensor | None = None) -> Tensor:
        """``hidden``: (B, H) prompt hidden states; ``action_index_BA``: (B, A) -> (K, B, A)."""
        if action_index_BA is None:
            raise ValueError("PromptInputQ needs action_index_BA (see action_indices)")
        q_KBA = torch.stack([head(hidden).gather(-1, action_index_BA) for head in self.heads])
        return torch.where(mask_BA, q_KBA, 0.0)


class ValueHead(nn.Module):
    """V(s) = MLP(prompt_hidden) -> (B,), PPO-GLAM's value head on the prompt state."""

    def __init__(self, hidden_size: int, width: int):
        super().__init__()
        self.mlp = MLPHead(hidden_size, width, 1)

    def forward(self, prompt_hidden_BH: Tensor) -> Tensor:
        return self.mlp(prompt_hidden_BH).squeeze(-1)
