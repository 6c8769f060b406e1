"""E Playground-Text environments stepped together, with auto-reset and exact checkpointing.

A custom synchronous wrapper rather than ``gymnasium.vector``: observations and actions are ragged
text (the admissible action list changes per state), which gymnasium's vector envs cannot batch, and
the agent needs per-env prompts, admissible lists and episode summaries (hindsight goals, final
observation) in named containers rather than in ``info`` dicts of arrays. It is also faster: no
space batching, no per-step info merging.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np

from sac_glam.config import EnvConfig
from sac_glam.envs.playground_text import PlaygroundText


class VecObs(NamedTuple):
    """What the agent sees in each of the E environments (lists of length E)."""

    goals: list[str]
    goal_types: list[str]
    observations: list[str]
    """Scene text without the goal (HER relabels goals, so the goal is stored apart)."""
    prompts: list[str]
    """``render_prompt(observation, goal)``: what the LLM reads."""
    actions: list[list[str]]
    """Admissible actions; ``VecEnv.step`` takes an index into each list."""


@dataclass(frozen=True)
class EpisodeEnd:
    """Summary of an episode that ended at this step (its last transition's env)."""

    goal: str
    goal_type: str
    success: bool
    length: int
    """Transitions in the episode."""
    terminated: bool
    truncated: bool
    final_observation: str
    """Scene text after the last step: a truncated episode's last state must still be bootstrapped."""
    final_actions: list[str]
    """Admissible actions in that final state."""
    hindsight: dict[str, int]
    """Social partner: goal text -> first step achieving it (goals of the env's split)."""


class VecStep(NamedTuple):
    """The result of one vector step."""

    obs: VecObs
    """Next observations; for an env whose episode just ended, the first observation of its new episode."""
    rewards: np.ndarray
    """(E,) float32."""
    terminated: np.ndarray
    """(E,) bool."""
    truncated: np.ndarray
    """(E,) bool."""
    ends: list[EpisodeEnd | None]
    """``ends[i]`` summarises env i's episode when it ended at this step, else None."""


class PlaygroundTextVecEnv:
    """``config.n_envs`` :class:`PlaygroundText` environments with their own seed streams.

    Env ``i`` is seeded once, on the first :meth:`reset`, from the ``i``-th child of
    ``np.random.SeedSequence(seed)``; later episodes (auto-resets, or another :meth:`reset`) continue
    its generator. The whole run is therefore a deterministic function of ``seed`` and the actions.
    Episodes of different lengths never mix: each env auto-resets on its own when its episode ends.
    """

    def __init__(self, config: EnvConfig, split: Literal["train", "test"] = "train", seed: int = 0) -> None:
        if config.n_envs < 1:
            raise ValueError(f"n_envs must be >= 1, got {config.n_envs}")
        self.config = config
        self.split = split
        self.n_envs = config.n_envs
        self.envs = [PlaygroundText(config, split) for _ in range(self.n_envs)]
        self._seeds: list[int] = [
            int(child.generate_state(1)[0]) for child in np.random.SeedSequence(seed).spawn(self.n_envs)
        ]
        self._seeded = False

    def reset(self) -> VecObs:
        """Start a new episode in every env (the first call seeds them)."""
        for env, seed in zip(self.envs, self._seeds, strict=True):
            env.reset(seed=None if self._seeded else seed)
        self._seeded = True
        return self.observe()

    def observe(self) -> VecObs:
        """The current observations (e.g. after :meth:`load_state_dict`)."""
        envs = self.envs
        if any(env.done for env in envs):
            raise RuntimeError("some environments have no running episode: call reset()")
        return VecObs(
            goals=[env.goal.text for env in envs],
            goal_types=[env.goal.goal_type for env in envs],
            observations=[env.observation for env in envs],
            prompts=[env.prompt for env in envs],
            actions=[env.admissible_actions for env in envs],
        )

    def step(self, action_ids: Sequence[int] | np.ndarray) -> VecStep:
        """Take action ``action_ids[i]`` (an index into env i's admissible actions) in every env i."""
        ids = np.asarray(action_ids)
        if ids.shape != (self.n_envs,) or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
            raise ValueError(
                f"action_ids must be {self.n_envs} integers, got shape {ids.shape} ({ids.dtype})"
            )
        ids_list: list[int] = ids.tolist()
        # Validate everything before stepping anything, so that an error leaves no env half-stepped.
        for i, (env, a) in enumerate(zip(self.envs, ids_list, strict=True)):
            if env.done:
                raise RuntimeError(f"env {i} has no running episode: call reset() first")
            n = len(env.admissible_codes)
            if not 0 <= a < n:
                raise ValueError(f"env {i}: action index {a} out of range for its {n} admissible actions")
        E = self.n_envs
        rewards = np.zeros(E, dtype=np.float32)
        terminated = np.zeros(E, dtype=bool)
        truncated = np.zeros(E, dtype=bool)
        ends: list[EpisodeEnd | None] = [None] * E
        goals, goal_types, observations, prompts, actions = [], [], [], [], []
        for i, (env, a) in enumerate(zip(self.envs, ids_list, strict=True)):
            obs, reward, term, trunc, info = env.step_index(a)
            if term or trunc:
                rewards[i], terminated[i], truncated[i] = reward, term, trunc
                ends[i] = EpisodeEnd(
                    goal=info["goal"],
                    goal_type=info["goal_type"],
                    success=info["success"],
                    length=env.t,
                    terminated=term,
                    truncated=trunc,
                    final_observation=obs,
                    final_actions=info["admissible_actions"],
                    hindsight=info["hindsight"],
                )
                obs, info = env.reset()
            goals.append(info["goal"])
            goal_types.append(info["goal_type"])
            observations.append(obs)
            prompts.append(info["prompt"])
            actions.append(info["admissible_actions"])
        next_obs = VecObs(goals, goal_types, observations, prompts, actions)
        return VecStep(next_obs, rewards, terminated, truncated, ends)

    def state_dict(self) -> dict[str, Any]:
        """RNG and episode state of every env (plain Python values), to resume exactly."""
        return {
            "seeds": list(self._seeds),
            "seeded": self._seeded,
            "envs": [env.state_dict() for env in self.envs],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["envs"]) != self.n_envs:
            raise ValueError(f"state has {len(state['envs'])} envs, this vector env has {self.n_envs}")
        self._seeds = list(state["seeds"])
        self._seeded = bool(state["seeded"])
        for env, env_state in zip(self.envs, state["envs"], strict=True):
            env.load_state_dict(env_state)
