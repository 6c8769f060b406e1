"""Learners: what an algorithm does with the transitions the loop collects, and when it updates.

The loop in ``train.py`` is the same for SAC and PPO; a learner decides what to store (episodes in
a replay buffer, or an on-policy rollout) and when and how to call ``backend.update`` (style point 8:
a small strategy object instead of ``if algo == ...`` ladders).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from sac_glam.backends.base import ActOutput, Backend
from sac_glam.buffers.replay import Episode, ReplayBuffer
from sac_glam.buffers.rollout import PPOBatch, gae
from sac_glam.config import PPOConfig
from sac_glam.envs.vector import VecObs, VecStep
from sac_glam.prompts import render_prompt


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

    def __init__(
        self,
        buffer: ReplayBuffer,
        n_envs: int,
        batch_size: int,
        update_every: int,
        n_updates: int,
        learning_starts: int,
        rng: np.random.Generator,
    ):
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
        return {"buffer": self.buffer.state_dict(), "builders": [asdict(b) for b in self.builders],
                "last_update_step": self.last_update_step, "rng": self.rng.bit_generator.state}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.buffer.load_state_dict(state["buffer"])
        self.builders = [EpisodeBuilder(**b) for b in state["builders"]]
        self.last_update_step = int(state["last_update_step"])


class PPOLearner:
    """An on-policy rollout of ``ppo.n_steps`` transitions, then ``epochs`` passes in minibatches."""

    needs_value = True

    def __init__(self, cfg: PPOConfig, n_envs: int, rng: np.random.Generator):
        if cfg.n_steps % n_envs:
            raise ValueError(f"ppo.n_steps ({cfg.n_steps}) must be a multiple of env.n_envs ({n_envs})")
        self.cfg = cfg
        self.n_envs = n_envs
        self.rng = rng
        self._clear()

    def _clear(self) -> None:
        self.prompts: list[list[str]] = []  # (T, E)
        self.actions: list[list[list[str]]] = []
        self.action_ids: list[np.ndarray] = []
        self.log_probs: list[np.ndarray] = []
        self.values: list[np.ndarray] = []
        self.rewards: list[np.ndarray] = []
        self.terminated: list[np.ndarray] = []
        self.truncated: list[np.ndarray] = []
        # (t, e, prompt of the episode's final observation): V there bootstraps a truncation.
        self.final_prompts: list[tuple[int, int, str]] = []

    def record(self, obs: VecObs, act: ActOutput, action_ids: np.ndarray, step: VecStep) -> None:
        assert act.value_B is not None, "PPO needs V(s) at acting time: call backend.act(..., value=True)"
        t = len(self.prompts)
        self.prompts.append(list(obs.prompts))
        self.actions.append(list(obs.actions))
        self.action_ids.append(np.asarray(action_ids, dtype=np.int64))
        idx = torch.as_tensor(action_ids, dtype=torch.long).view(-1, 1)
        self.log_probs.append(
            act.log_pi_BA.gather(-1, idx.to(act.log_pi_BA.device)).squeeze(-1).cpu().numpy()
        )
        self.values.append(act.value_B.float().cpu().numpy())
        self.rewards.append(np.asarray(step.rewards, dtype=np.float32))
        self.terminated.append(np.asarray(step.terminated, dtype=bool))
        self.truncated.append(np.asarray(step.truncated, dtype=bool))
        for e, end in enumerate(step.ends):
            if end is not None and end.truncated:
                self.final_prompts.append((t, e, render_prompt(end.final_observation, end.goal)))

    def ready(self, total_steps: int) -> bool:
        return len(self.prompts) * self.n_envs >= self.cfg.n_steps

    def update(self, backend: Backend, next_obs: VecObs, total_steps: int) -> list[dict[str, float]]:
        cfg = self.cfg
        values_TE = np.stack(self.values)
        final_values_TE = np.zeros_like(values_TE)
        if self.final_prompts:
            # Truncated episodes bootstrap from V(final observation): the truncation is not terminal.
            # The final observation's actions do not matter for V(s), which reads the prompt only.
            finals = backend.act(
                [p for _, _, p in self.final_prompts], [["Grasp"]] * len(self.final_prompts), value=True
            )
            assert finals.value_B is not None
            for (t, e, _), v in zip(self.final_prompts, finals.value_B.float().cpu().numpy(), strict=True):
                final_values_TE[t, e] = v
        last = backend.act(next_obs.prompts, next_obs.actions, value=True)
        assert last.value_B is not None
        adv_TE, ret_TE = gae(
            np.stack(self.rewards), values_TE, np.stack(self.terminated), np.stack(self.truncated),
            final_values_TE, last.value_B.float().cpu().numpy(), cfg.gamma, cfg.gae_lambda,
        )  # fmt: skip
        prompts = [p for row in self.prompts for p in row]
        actions = [a for row in self.actions for a in row]
        action_ids = torch.as_tensor(np.concatenate(self.action_ids))
        log_probs = torch.as_tensor(np.concatenate(self.log_probs))
        values = torch.as_tensor(values_TE.reshape(-1))
        advantages, returns = torch.as_tensor(adv_TE.reshape(-1)), torch.as_tensor(ret_TE.reshape(-1))
        stats = []
        n = len(prompts)
        for _ in range(cfg.epochs):
            order = self.rng.permutation(n)
            for start in range(0, n, cfg.batch_size):
                rows = order[start : start + cfg.batch_size]
                batch = PPOBatch(
                    [prompts[i] for i in rows], [actions[i] for i in rows], action_ids[rows],
                    log_probs[rows], values[rows], advantages[rows], returns[rows],
                )  # fmt: skip
                stats.append(backend.update(batch))
        self._clear()
        return stats

    def metrics(self) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k not in ("cfg", "rng", "n_envs")} | {
            "rng": self.rng.bit_generator.state
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        self.rng.bit_generator.state = state.pop("rng")
        for k, v in state.items():
            setattr(self, k, v)
