"""Learners: what an algorithm does with the transitions the loop collects, and when it updates.

The loop in ``train.py`` is the same for SAC and PPO; a learner decides what to store (episodes in
a replay buffer, or an on-policy rollout) and when and how to call ``backend.update`` (style point 8:
a small strategy object instead of ``if algo == ...`` ladders).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from sac_glam.backends.base import ActOutput, Backend
from sac_glam.buffers.replay import Episode, ReplayBuffer
from sac_glam.envs.vector import VecObs, VecStep


class Learner(Protocol):
    def record(self, obs: VecObs, act: ActOutput, action_ids: np.ndarray, step: VecStep) -> None:
        """Store one vector step (``obs`` before it, the policy output, the actions, the outcome)."""
        ...

    def ready(self, total_steps: int) -> bool:
        """Whether an update is due after ``total_steps`` collected transitions."""
        ...

    def update(self, backend: Backend, next_obs: VecObs, total_steps: int) -> list[dict[str, float]]:
        """Run the due update(s); returns the stats of each gradient step."""
        ...

    def metrics(self) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class EpisodeBuilder:
    """The transitions of one environment's episode in progress."""

    goal: str = ""
    observations: list[str] = field(default_factory=list)
    actions: list[list[str]] = field(default_factory=list)
    action_ids: list[int] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)


class SACLearner:
    """Episodes into the replay buffer (with HER), ``n_updates`` gradient steps every ``update_every``."""

    def __init__(self, buffer: ReplayBuffer, n_envs: int, batch_size: int, update_every: int,
                 n_updates: int, learning_starts: int, rng: np.random.Generator):
        self.buffer = buffer
        self.batch_size = batch_size
        self.update_every = update_every
        self.n_updates = n_updates
        self.learning_starts = learning_starts
        self.rng = rng
        self.builders = [EpisodeBuilder() for _ in range(n_envs)]
        self.last_update_step = 0

    def record(self, obs: VecObs, act: ActOutput, action_ids: np.ndarray, step: VecStep) -> None:
        for i, b in enumerate(self.builders):
            if not b.observations:
                b.goal = obs.goals[i]
            b.observations.append(obs.observations[i])
            b.actions.append(obs.actions[i])
            b.action_ids.append(int(action_ids[i]))
            b.rewards.append(float(step.rewards[i]))
            end = step.ends[i]
            if end is None:
                continue
            self.buffer.add_episode(
                Episode(
                    goal=b.goal,
                    observations=[*b.observations, end.final_observation],
                    actions=[*b.actions, end.final_actions],
                    action_ids=np.asarray(b.action_ids, dtype=np.int64),
                    rewards=np.asarray(b.rewards, dtype=np.float32),
                    terminated=end.terminated,
                    truncated=end.truncated,
                    hindsight=dict(end.hindsight),
                )
            )
            self.builders[i] = EpisodeBuilder()

    def ready(self, total_steps: int) -> bool:
        if len(self.buffer) < self.learning_starts:
            # The schedule starts once learning starts: no backlog of updates for the filling phase.
            self.last_update_step = total_steps
            return False
        return total_steps - self.last_update_step >= self.update_every

    def update(self, backend: Backend, next_obs: VecObs, total_steps: int) -> list[dict[str, float]]:
        # With update_every smaller than a vector step (e.g. 16 < 32 envs), several updates are due at
        # once: keep the schedule in transitions exact rather than rounding it to vector steps.
        due = (total_steps - self.last_update_step) // self.update_every
        self.last_update_step += due * self.update_every
        n_steps = due * self.n_updates
        return [backend.update(self.buffer.sample(self.batch_size, self.rng)) for _ in range(n_steps)]

    def metrics(self) -> dict[str, float]:
        return {"buffer/her_share": self.buffer.her_share(), "buffer/transitions": float(len(self.buffer))}

    def state_dict(self) -> dict[str, Any]:
        return {"buffer": self.buffer.state_dict(), "builders": self.builders, "last_update_step": self.last_update_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.buffer.load_state_dict(state["buffer"])
        self.builders = state["builders"]
        self.last_update_step = int(state["last_update_step"])
