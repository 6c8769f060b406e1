"""Build the run's parts from a :class:`Config`: agent, backend, learner (one place, no ladders elsewhere).

The agent and updater are built in :mod:`sac_glam.backends.build` (re-exported here), which both
backends use: the factory imports the backends, never the other way round.
"""

from __future__ import annotations

import numpy as np

from sac_glam.backends.base import Backend
from sac_glam.backends.build import device_of, make_agent, make_updater
from sac_glam.config import Config, ConfigError
from sac_glam.run.learners import Learner

__all__ = ["device_of", "make_agent", "make_backend", "make_learner", "make_updater"]


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
    from sac_glam.run.learners import SACLearner

    if cfg.train.algo == "sac":
        prior = goal_type_prior("train", cfg.env.sequential_goals)
        if cfg.env.goal_types:
            prior = {k: v for k, v in prior.items() if k in cfg.env.goal_types}
        buffer = ReplayBuffer.from_config(cfg.buffer, cfg.sac.gamma, prior)
        return SACLearner(buffer, cfg.env.n_envs, cfg.sac.batch_size, cfg.sac.update_every,
                          cfg.sac.n_updates, cfg.sac.learning_starts, rng)  # fmt: skip
    from sac_glam.run.learners import PPOLearner

    return PPOLearner(cfg.ppo, cfg.env.n_envs, rng)
