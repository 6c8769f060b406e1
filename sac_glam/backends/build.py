"""The agent and its updater built from a :class:`Config`: what every backend holds.

The local backend builds them in the RL process, the Lamorel backend in each LLM server
(:class:`~sac_glam.backends.lamorel.server.AgentInitializer`, ``AgentUpdater``): one function each, so
that both backends train the very same model with the very same seed. ``sac_glam.run.factory`` re-exports
them; they live here, below the backends, so that no backend imports the factory that imports it.
"""

from __future__ import annotations

import torch

from sac_glam.algos.updaters import PPOUpdater, SACUpdater
from sac_glam.config import Config, ConfigError
from sac_glam.llm.agent import LLMAgent
from sac_glam.llm.lanes import make_lanes
from sac_glam.pretrain import pretrain_tiny


def device_of(cfg: Config) -> torch.device:
    if cfg.train.device == "cuda" or (cfg.train.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError(
                "train.device='cuda' but torch sees no CUDA device; use train.device=cpu or auto"
            )
        return torch.device("cuda")
    return torch.device("cpu")


def make_updater(cfg: Config, agent: LLMAgent) -> SACUpdater | PPOUpdater:
    if cfg.train.algo == "sac":
        return SACUpdater(agent, cfg.sac, tau=cfg.critic.tau)

    return PPOUpdater(agent, cfg.ppo)


def make_agent(cfg: Config) -> LLMAgent:
    torch.manual_seed(cfg.train.seed)
    device = device_of(cfg)
    agent = LLMAgent(
        cfg.model, cfg.critic, need_value=cfg.train.algo == "ppo", device=device, pretrain=pretrain_tiny
    )
    if cfg.train.algo == "sac":  # PPO has no critic LLM pass to run beside the policy's
        agent.lanes = make_lanes(device, agent.critic_llm is not None, cfg.train.parallel_llms)
    return agent.to(device)
