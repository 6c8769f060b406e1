"""Playing seeded episodes with a policy: the loop's evaluation protocol, one loop for every caller.

:func:`play_episodes` is that protocol: a vector env of ``env.n_envs`` environments seeded from
``seed``, a fixed quota of episodes per environment, actions sampled from pi (or its argmax) with a
generator seeded from ``seed``. :func:`evaluate` (the loop's ``eval/`` metrics) plays through it, and so
does ``sac-glam bench heldout`` (:mod:`sac_glam.benchmarks.heldout`), which records each episode's
actions and may show the policy another wording of the goal through an :class:`EpisodeHook`: so the
bench plays the very episodes the loop evaluates.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Literal, Protocol

import numpy as np

from sac_glam.backends.base import ActOutput
from sac_glam.config import Config, EnvConfig
from sac_glam.envs.goals import GOAL_TYPES
from sac_glam.envs.rules import sampling_goals
from sac_glam.envs.vector import EpisodeEnd, PlaygroundTextVecEnv, VecObs


class Policy(Protocol):
    """What :func:`play_episodes` acts with: a backend, or a stand-in such as argmax Q."""

    def act(self, prompts: list[str], actions: list[list[str]]) -> ActOutput: ...


def sample_actions(act: ActOutput, rng: np.random.Generator, greedy: bool = False) -> np.ndarray:
    """One action index per state from pi (inverse-CDF sampling; padded actions have pi = 0)."""
    pi_BA = (act.log_pi_BA.exp() * act.mask_BA).double().cpu().numpy()
    if greedy:
        return pi_BA.argmax(-1)
    u_B1 = rng.random((pi_BA.shape[0], 1)) * pi_BA.sum(-1, keepdims=True)
    idx = (np.cumsum(pi_BA, -1) < u_B1).sum(-1)
    # Float round-off could point past the last real action: clamp to the admissible range.
    return np.minimum(idx, act.mask_BA.sum(-1).cpu().numpy() - 1).astype(np.int64)


def success_by_type(records: list[tuple[str, float, int]]) -> dict[str, float]:
    """Mean success overall and per goal type of (goal_type, success, length) records."""
    out: dict[str, float] = {}
    if not records:
        return out
    out["success_rate"] = float(np.mean([r[1] for r in records]))
    out["episode_length"] = float(np.mean([r[2] for r in records]))
    for goal_type in GOAL_TYPES:
        s = [r[1] for r in records if r[0] == goal_type]
        if s:
            out[f"success_rate/{goal_type}"] = float(np.mean(s))
    return out


class EpisodeHook:
    """What a caller of :func:`play_episodes` sees of the episodes, and the prompts the policy reads.

    This base class watches nothing and shows the environments' own prompts; a subclass overrides
    what it needs (the held-out bench records actions and rewords goals).
    """

    def started(self, envs: PlaygroundTextVecEnv) -> None:
        """After the first reset: every environment's first episode has begun."""

    def prompts(self, obs: VecObs) -> list[str]:
        """What the policy reads in each environment."""
        return obs.prompts

    def acting(self, action_ids: np.ndarray) -> None:
        """The sampled action indices (into each environment's admissible list), before the step."""

    def ended(self, env: int, end: EpisodeEnd, counted: bool) -> None:
        """Environment ``env``'s episode ended and its next one has begun; ``counted``: within its quota."""


def play_episodes(
    policy: Policy,
    env_cfg: EnvConfig,
    split: Literal["train", "test"],
    episodes: int,
    seed: int,
    greedy: bool,
    hook: EpisodeHook | None = None,
) -> list[EpisodeEnd]:
    """The ends of at least ``episodes`` episodes of a goal split, in the order they ended.

    Each environment plays a fixed quota of episodes, so short (successful) episodes are not
    over-represented: with 4 environments and ``episodes=7`` each plays 2, and 8 ends come back; the
    environments play on until the slowest is done, and the episodes past a quota are not counted. The
    environments and the sampling are seeded from ``seed`` alone, so two calls differ only by the policy.
    """
    hook = hook or EpisodeHook()
    envs = PlaygroundTextVecEnv(env_cfg, split=split, seed=seed)
    quota = -(-episodes // envs.n_envs)
    done = np.zeros(envs.n_envs, dtype=np.int64)
    ends: list[EpisodeEnd] = []
    rng = np.random.default_rng(seed)
    obs = envs.reset()
    hook.started(envs)
    while (done < quota).any():
        action_ids = sample_actions(policy.act(hook.prompts(obs), obs.actions), rng, greedy=greedy)
        hook.acting(action_ids)
        step = envs.step(action_ids)
        for i, end in enumerate(step.ends):
            if end is None:
                continue
            counted = bool(done[i] < quota)
            if counted:
                done[i] += 1
                ends.append(end)
            hook.ended(i, end, counted)
        obs = step.obs
    return ends


def eval_seed(cfg: Config) -> int:
    """The seed of a run's evaluations (every evaluation of the run, and ``sac-glam eval``'s default)."""
    return cfg.train.seed + 10_000


def evaluate(policy: Policy, cfg: Config, split: str, seed: int) -> dict[str, float]:
    """Success of ``policy`` on ``train.eval_episodes`` episodes of a goal split (:func:`play_episodes`).

    The environments are re-seeded identically at every evaluation, so that two evaluations of a run
    differ only by the policy.
    """
    if cfg.train.eval_by_type:
        return _evaluate_by_type(policy, cfg, split, seed)
    ends = play_episodes(policy, cfg.env, split, cfg.train.eval_episodes, seed, cfg.train.eval_greedy)  # type: ignore[arg-type]
    return success_by_type([(end.goal_type, float(end.success), end.length) for end in ends])


def _evaluate_by_type(policy: Policy, cfg: Config, split: str, seed: int) -> dict[str, float]:
    """``train.eval_by_type``: ``eval_episodes`` split evenly over the goal types the environment samples.

    On the full environment 97.9% of train goals are sequential, so uniform goal sampling leaves the
    simple types a few episodes per evaluation. Here each type gets its share, and ``success_rate`` is
    the types' success weighted by their share of the goal pool: the same quantity as uniform sampling
    estimates (stratified sampling), so the two settings' curves compare. ``episode_length`` is the
    mean over the stratified episodes.
    """
    pool, _ = sampling_goals(cfg.env, split)  # type: ignore[arg-type]
    weights = Counter(g.goal_type for g in pool)
    n_each = -(-cfg.train.eval_episodes // len(weights))
    records: list[tuple[str, float, int]] = []
    for goal_type in (t for t in GOAL_TYPES if t in weights):
        env_cfg = replace(cfg.env, goal_types=[goal_type])
        ends = play_episodes(policy, env_cfg, split, n_each, seed, cfg.train.eval_greedy)  # type: ignore[arg-type]
        records += [(end.goal_type, float(end.success), end.length) for end in ends]
    out = success_by_type(records)
    out["success_rate"] = sum(out[f"success_rate/{t}"] * w for t, w in weights.items()) / len(pool)
    return out
