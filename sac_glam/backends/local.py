"""The ``local`` backend: the LLM lives in the RL loop's own process (the embedded default)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sac_glam.backends.base import ActOutput
from sac_glam.llm.agent import LLMAgent


class LocalBackend:
    """Calls the agent and the updater directly.

    ``updater`` is any object with ``update(batch) -> dict``, ``state_dict()`` and
    ``load_state_dict()`` (``SACUpdater`` or ``PPOUpdater``): the same classes the Lamorel backend
    registers as its ``custom_updater``.
    """

    def __init__(self, agent: LLMAgent, updater: Any):
        self.agent = agent
        self.updater = updater

    def act(self, prompts: list[str], actions: list[list[str]], *, value: bool = False) -> ActOutput:
        with torch.no_grad():
            out = self.agent.evaluate(prompts, actions, v=value)
        return ActOutput(out.log_pi_BA, out.mask_BA, out.v_B)

    def update(self, batch: Any) -> dict[str, float]:
        stats: dict[str, float] = self.updater.update(batch)
        return stats

    def state_dict(self) -> dict[str, Any]:
        return {"agent": self.agent.trainable_state_dict(), "updater": self.updater.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.agent.load_trainable_state_dict(state["agent"])
        self.updater.load_state_dict(state["updater"])

    def save_pretrained(self, path: str | Path) -> None:
        self.agent.save(path)

    def close(self) -> None:
        pass
