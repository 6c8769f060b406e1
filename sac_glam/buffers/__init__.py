"""Replay buffers: SAC episode replay with n-step returns and HER (:mod:`.replay`, :mod:`.her`)."""

from sac_glam.buffers.her import (
    PriorSampling,
    RatioSampling,
    SamplingStrategy,
    UniformSampling,
    goal_type_prior,
    hindsight_relabels,
    make_strategy,
)
from sac_glam.buffers.replay import Episode, ReplayBuffer, SACBatch

__all__ = [
    "Episode",
    "PriorSampling",
    "RatioSampling",
    "ReplayBuffer",
    "SACBatch",
    "SamplingStrategy",
    "UniformSampling",
    "goal_type_prior",
    "hindsight_relabels",
    "make_strategy",
]
