"""The interface between the RL loop and whatever holds the LLM.

The loop owns environments, buffers and the schedule; a backend owns the model, the optimisers and
the loss computation. They exchange only batches of text and numbers (``docs/design.md``), which is what lets
one loop drive the in-process ``local`` backend and the ``lamorel`` backend (LLM servers) alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple, Protocol

import torch


class ActOutput(NamedTuple):
    """The policy at a batch of states.

    ``log_pi_BA``: log pi(a|s) over the admissible actions, padded entries 0; ``mask_BA``: real actions;
    ``value_B``: V(s) when asked for (PPO), else None.
    """

    log_pi_BA: torch.Tensor
    mask_BA: torch.Tensor
    value_B: torch.Tensor | None


class Backend(Protocol):
    """What the RL loop needs from the LLM side."""

    def act(self, prompts: list[str], actions: list[list[str]], *, value: bool = False) -> ActOutput:
        """pi(.|s) (and V(s)) at each prompt, without gradients."""
        ...

    def update(self, batch: Any) -> dict[str, float]:
        """One gradient step of the configured algorithm on ``batch``; returns namespaced stats."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Trainable weights, targets, optimisers: everything to resume exactly."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def save_pretrained(self, path: str | Path) -> None:
        """Adapters and heads in a format peft can reload."""
        ...

    def close(self) -> None: ...
