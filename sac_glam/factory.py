"""Build the run's parts from a :class:`Config`: agent, backend, learner (one place, no ladders elsewhere)."""

from __future__ import annotations

import numpy as np
import torch

from sac_glam.algos.updaters import PPOUpdater, SACUpdater
from sac_glam.backends.base import Backend
from sac_glam.config import Config, ConfigError
from sac_glam.learners import Learner
from sac_glam.llm.agent import LLMAgent


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
    agent = LLMAgent(cfg.model, cfg.critic, need_value=cfg.train.algo == "ppo", device=device)
    return agent.to(device)


def make_backend(cfg: Config) -> Backend:
    if cfg.train.backend == "lamorel":
        try:
            from sac_glam.backends.lamorel import LamorelBackend
        except ModuleNotFoundError as err:
            if err.name is None or err.name.split(".")[0] != "lamorel":
                raise
            raise ConfigError(
                "train.backend='lamorel' needs Lamorel, which is not on PyPI: install the extra with "
                "pip install 'sac-glam[lamorel]' (or from a clone: pip install -e '.[lamorel]'), "
                "or use train.backend=local"
            ) from err
        # Inside Lamorel's RL process the RL script has built the backend around its Caller.
        active = LamorelBackend.active()
        if active is None:
            raise ConfigError(
                "train.backend='lamorel' is started through lamorel-launch (which runs Lamorel's launcher), "
                "not train() directly"
            )
        return active
    from sac_glam.backends.local import LocalBackend

    agent = make_agent(cfg)
    return LocalBackend(agent, make_updater(cfg, agent))


def make_learner(cfg: Config, rng: np.random.Generator) -> Learner:
    from sac_glam.buffers.her import goal_type_prior
    from sac_glam.buffers.replay import ReplayBuffer
    from sac_glam.learners import SACLearner

    if cfg.train.algo == "sac":
        prior = goal_type_prior("train", cfg.env.sequential_goals)
        if cfg.env.goal_types:
            prior = {k: v for k, v in prior.items() if k in cfg.env.goal_types}
        buffer = ReplayBuffer.from_config(cfg.buffer, cfg.sac.gamma, prior)
        return SACLearner(buffer, cfg.env.n_envs, cfg.sac.batch_size, cfg.sac.update_every,
                          cfg.sac.n_updates, cfg.sac.learning_starts, rng)  # fmt: skip
    from sac_glam.learners import PPOLearner

    return PPOLearner(cfg.ppo, cfg.env.n_envs, rng)
