"""SAC replay buffer: whole episodes, n-step targets at sampling time, HER copies by reference.

Layout (why it looks like this):

- Episodes are stored whole when they end (:meth:`ReplayBuffer.add_episode`); n-step windows are
  computed when a batch is sampled, from the stored per-step arrays, so changing ``n_step`` or
  ``gamma`` never requires rewriting the buffer.
- The goal is stored apart from the observation (style point 6): environment observations are scene
  texts without the goal, and the prompt is rendered with :func:`sac_glam.prompts.render_prompt` only
  for the sampled transitions. A HER copy is then just (episode, goal id, cut): it shares the episode's
  texts instead of copying them.
- Texts are interned: an observation text or an action list (a tuple of strings) is stored once however
  many steps (of any episode) show it, and steps hold int ids. Tables are reference counted, so the
  texts of evicted episodes are freed.
- A *source* is what a transition belongs to: the environment episode itself or one of its HER copies.
  Sampling draws (source id, t) pairs from flat numpy FIFO indices, one per (is_her, goal type) group, so
  every strategy of :mod:`sac_glam.buffers.her` is a handful of vectorised draws.
- Capacity counts transitions, environment *and* HER copies. The paper keeps the buffer small to bound
  the age of the oldest transition, because n-step targets of old transitions are off-policy (Section
  2.2, Appendix F); counting only environment transitions would let HER copies (most of the buffer,
  Figure 7) silently enlarge it. Eviction removes the oldest episodes first with all their HER copies.
  ``capacity_counts="env"`` counts environment transitions only: a measured alternative for environments
  whose partner reports many goals per episode, where counting copies keeps only the newest episodes.

Where the code lives: this module holds the buffer's logic (adding, evicting, n-step targets, state);
:mod:`sac_glam.buffers.transitions` the types it takes and returns (:class:`Episode`,
:class:`SACBatch`, re-exported here); :mod:`sac_glam.buffers.tables` the storage tables it is built on.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np
import torch

from sac_glam.buffers.her import SamplingStrategy, hindsight_relabels, make_strategy
from sac_glam.buffers.tables import ColumnFifo, InternTable, TransitionIndex
from sac_glam.buffers.transitions import Episode, SACBatch
from sac_glam.config import BufferConfig
from sac_glam.envs.goals import parse_goal
from sac_glam.prompts import render_prompt

__all__ = ["Episode", "ReplayBuffer", "SACBatch", "default_goal_type"]

_STATE_FORMAT = 1


def default_goal_type(goal: str) -> str:
    """The Playground-Text goal type (grasp, grow, grow_then_grasp, grow_then_grow) of a goal text."""
    return parse_goal(goal).goal_type


class ReplayBuffer:
    """Episode replay with n-step targets and (optional) HER copies that refer to stored episodes.

    Args:
        capacity: maximum stored transitions, environment plus HER (see the module docstring).
        capacity_counts: ``all`` (capacity counts environment and HER transitions) or ``env`` (only
            environment transitions; HER copies leave with their episode).
        n_step: n of eq. 3.
        gamma: discount factor.
        her: add a relabelled copy per social-partner goal (:func:`~sac_glam.buffers.her.hindsight_relabels`).
        her_strategy: batch composition, ``uniform`` / ``ratio`` / ``prior`` (:mod:`sac_glam.buffers.her`).
        her_ratio: HER share of a batch under ``ratio``.
        goal_type_prior: goal type -> probability (or count) of the environment's goal set, for ``prior``
            (:func:`~sac_glam.buffers.her.goal_type_prior`).
        goal_type_of: goal text -> goal type; Playground-Text's grammar by default.
    """

    def __init__(
        self,
        capacity: int = 100_000,
        n_step: int = 3,
        gamma: float = 0.99,
        her: bool = False,
        her_strategy: str = "ratio",
        her_ratio: float = 0.5,
        goal_type_prior: Mapping[str, float] | None = None,
        goal_type_of: Callable[[str], str] = default_goal_type,
        capacity_counts: Literal["all", "env"] = "all",
    ) -> None:
        if capacity < 1 or n_step < 1:
            raise ValueError(f"capacity and n_step must be >= 1, got {capacity} and {n_step}")
        if capacity_counts not in ("all", "env"):
            raise ValueError(f"capacity_counts must be 'all' or 'env', got {capacity_counts!r}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        self.capacity = capacity
        self.capacity_counts = capacity_counts
        self.n_step = n_step
        self.gamma = gamma
        self.her = her
        self.strategy: SamplingStrategy = make_strategy(her_strategy, her_ratio, goal_type_prior)
        self._goal_type_of = goal_type_of
        # Per step of every stored episode, T+1 rows (o_0..o_T); row T pads action_id (-1) and reward (0)
        # so that an observation and its action list share a row.
        self._steps = ColumnFifo(
            {"obs": np.int32, "acts": np.int32, "action_id": np.int64, "reward": np.float32}
        )
        # Per episode: first step row (global id), T, and its sources (env + HER copies, consecutive ids).
        self._episodes = ColumnFifo(
            {
                "start": np.int64,
                "T": np.int32,
                "first_source": np.int64,
                "n_sources": np.int32,
                "size": np.int64,
            }
        )
        # Per source: episode id, goal id, end = number of transitions covered (T, or t*+1 for a HER
        # copy), terminal = no bootstrap after the last covered transition, group.
        self._sources = ColumnFifo(
            {
                "episode": np.int64,
                "goal": np.int32,
                "end": np.int32,
                "terminal": np.bool_,
                "is_her": np.bool_,
                "gtype": np.int16,
            }
        )
        self._index = TransitionIndex()
        self._observations: InternTable[str] = InternTable()
        self._action_lists: InternTable[tuple[str, ...]] = InternTable()
        self._goals: InternTable[str] = InternTable()
        self._types: list[str] = []  # goal type id -> name (a handful, never freed)
        self._n_her = 0

    @classmethod
    def from_config(
        cls, cfg: BufferConfig, gamma: float, goal_type_prior: Mapping[str, float] | None = None
    ) -> ReplayBuffer:
        return cls(
            capacity=cfg.capacity,
            n_step=cfg.n_step,
            gamma=gamma,
            her=cfg.her,
            her_strategy=cfg.her_strategy,
            her_ratio=cfg.her_ratio,
            goal_type_prior=goal_type_prior,
            capacity_counts=cfg.capacity_counts,
        )

    # ------------------------------------------------------------------ sizes
    def __len__(self) -> int:
        """Stored transitions, environment and HER."""
        return len(self._steps) - len(self._episodes) + self._n_her

    @property
    def n_env_transitions(self) -> int:
        return len(self._steps) - len(self._episodes)  # T+1 step rows per episode hold T transitions

    @property
    def n_her_transitions(self) -> int:
        return self._n_her

    @property
    def n_episodes(self) -> int:
        return len(self._episodes)

    @property
    def n_counted(self) -> int:
        """Transitions that count against ``capacity``: all of them, or the environment's only."""
        return self.n_env_transitions if self.capacity_counts == "env" else len(self)

    def her_share(self) -> float:
        """Fraction of stored transitions that are HER copies (paper Figure 7); 0 when empty."""
        return self._n_her / len(self) if len(self) else 0.0

    def goal_type_counts(self) -> dict[str, int]:
        """Stored transitions (environment and HER) per goal type."""
        counts: dict[str, int] = {}
        for (_, gtype), n in self._index.sizes().items():
            counts[gtype] = counts.get(gtype, 0) + n
        return counts

    # ------------------------------------------------------------------ adding
    def _type_id(self, goal: str) -> int:
        name = self._goal_type_of(goal)
        if name not in self._types:
            self._types.append(name)
        return self._types.index(name)

    def add_episode(self, ep: Episode) -> None:
        """Store a finished episode and, with ``her``, one copy per social-partner goal; evict to fit."""
        ep.validate()
        T = len(ep)
        cuts = hindsight_relabels(ep.goal, ep.hindsight, T) if self.her else []
        size = T + sum(t_star + 1 for _, t_star in cuts)
        counted = T if self.capacity_counts == "env" else size
        if counted > self.capacity:
            raise ValueError(
                f"one episode counts {counted} transitions (capacity_counts={self.capacity_counts!r}) "
                f"> capacity {self.capacity}"
            )
        # Source 0 of an episode is the episode itself (terminal only if it terminated), then one HER
        # copy per cut, terminal at its cut. Goal types are looked up first: an unknown goal must raise
        # before anything is evicted or stored.
        labels = [(ep.goal, T, bool(ep.terminated), False), *((g, t + 1, True, True) for g, t in cuts)]
        gtypes = [self._type_id(goal) for goal, *_ in labels]
        self._evict_for(counted)

        start = self._steps.append(
            obs=self._observations.add_many(ep.observations),
            # Identical action lists are stored once; sys.intern makes their strings shared objects too.
            acts=self._action_lists.add_many(tuple(sys.intern(s) for s in a) for a in ep.actions),
            action_id=np.append(np.asarray(ep.action_ids, dtype=np.int64), -1),
            reward=np.append(np.asarray(ep.rewards, dtype=np.float32), 0.0),
        )
        ep_id = self._episodes.base + len(self._episodes)
        first_source = self._sources.base + len(self._sources)
        for (goal, end, terminal, is_her), gtype in zip(labels, gtypes, strict=True):
            src = self._sources.append(
                episode=ep_id,
                goal=self._goals.add(goal),
                end=end,
                terminal=terminal,
                is_her=is_her,
                gtype=gtype,
            )
            self._index.append((is_her, self._types[gtype]), src, end)
        self._episodes.append(start=start, T=T, first_source=first_source, n_sources=len(labels), size=size)
        self._n_her += size - T

    def _evict_for(self, incoming: int) -> None:
        """Evict the oldest episodes (with their HER copies) until ``incoming`` more counted transitions fit."""
        sizes = self._episodes.col("T" if self.capacity_counts == "env" else "size").astype(np.int64)
        excess = self.n_counted + incoming - self.capacity
        if excess <= 0:
            return
        # Fewest oldest episodes whose sizes sum to >= excess. Example: sizes (10, 20, 5), excess 15 ->
        # cumsum (10, 30, 35) -> searchsorted gives 1 -> evict 2 episodes.
        n_ep = int(np.searchsorted(np.cumsum(sizes), excess)) + 1
        eps = self._episodes.pop_front(n_ep)
        n_steps = int(eps["T"].sum()) + n_ep
        steps = self._steps.pop_front(n_steps)
        self._observations.release(steps["obs"])
        self._action_lists.release(steps["acts"])
        srcs = self._sources.pop_front(int(eps["n_sources"].sum()))
        self._goals.release(srcs["goal"])
        for is_her, gtype, end in zip(
            srcs["is_her"].tolist(), srcs["gtype"].tolist(), srcs["end"].tolist(), strict=True
        ):
            self._index.pop_front((is_her, self._types[gtype]), end)
        self._n_her -= int(eps["size"].sum() - eps["T"].sum())

    # ------------------------------------------------------------------ sampling
    def sample(self, batch_size: int, rng: np.random.Generator) -> SACBatch:
        """A batch of ``batch_size`` n-step transitions chosen by the HER strategy."""
        if len(self) == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        src_B, t_B = self.strategy.draw(self._index, batch_size, rng)
        return self._batch(src_B, t_B)

    def _batch(self, src_B: np.ndarray, t_B: np.ndarray) -> SACBatch:
        """Assemble the transitions (source id, t): n-step returns, discounts and prompts, vectorised.

        With k = min(n, end - t) and ``end`` the source's number of transitions:
        returns = sum_{i<k} gamma^i r_{t+i}, next state s_{t+k}, discount gamma^k, or 0 when the window
        reaches the end (t + k == end) of a terminal source. Worked example, n = 3, gamma = 0.9:

        - env episode, T = 5 (o_0..o_5), t = 3: k = min(3, 2) = 2, returns r_3 + 0.9 r_4, next o_5;
          discount 0 if it terminated, 0.81 if it was truncated (bootstrap from o_5);
        - t = 0 of the same episode: k = 3, returns r_0 + 0.9 r_1 + 0.81 r_2, next o_3, discount 0.729;
        - HER copy cut at t* = 2 (end = 3), t = 1: k = 2, rewards (0, 1), returns 0.9, next o_3,
          discount 0 (a copy is terminal at its cut).
        """
        n = self.n_step
        row_B = src_B - self._sources.base
        ep_B = self._sources.col("episode")[row_B]
        goal_B = self._sources.col("goal")[row_B]
        end_B = self._sources.col("end")[row_B].astype(np.int64)
        terminal_B = self._sources.col("terminal")[row_B]
        is_her_B = self._sources.col("is_her")[row_B]
        gtype_B = self._sources.col("gtype")[row_B]
        # Local row of o_0 of each transition's episode in the step table.
        start_B = self._episodes.col("start")[ep_B - self._episodes.base] - self._steps.base
        t_B = t_B.astype(np.int64)
        k_B = np.minimum(n, end_B - t_B)

        returns_B = self._reward_sums(start_B, t_B, end_B, is_her_B, k_B)
        # The same sum over the whole rest of the source (sac.target_lower_bound's observed return).
        returns_to_go_B = self._reward_sums(start_B, t_B, end_B, is_her_B, end_B - t_B)
        ends_in_window_B = t_B + k_B == end_B
        discounts_B = np.where(terminal_B & ends_in_window_B, 0.0, self.gamma**k_B)

        obs = self._steps.col("obs")
        acts = self._steps.col("acts")
        action_id_B = self._steps.col("action_id")[start_B + t_B]
        goals = [self._goals[g] for g in goal_B.tolist()]
        o_B, a_B = obs[start_B + t_B].tolist(), acts[start_B + t_B].tolist()
        o2_B, a2_B = obs[start_B + t_B + k_B].tolist(), acts[start_B + t_B + k_B].tolist()
        return SACBatch(
            prompts=[render_prompt(self._observations[o], g) for o, g in zip(o_B, goals, strict=True)],
            actions=[list(self._action_lists[a]) for a in a_B],
            action_ids=torch.from_numpy(action_id_B.astype(np.int64)),
            returns=torch.from_numpy(returns_B.astype(np.float32)),
            next_prompts=[render_prompt(self._observations[o], g) for o, g in zip(o2_B, goals, strict=True)],
            next_actions=[list(self._action_lists[a]) for a in a2_B],
            discounts=torch.from_numpy(discounts_B.astype(np.float32)),
            is_her=torch.from_numpy(is_her_B.copy()),
            goal_types=[self._types[g] for g in gtype_B.tolist()],
            returns_to_go=torch.from_numpy(returns_to_go_B.astype(np.float32)),
        )

    def _reward_sums(
        self, start_B: np.ndarray, t_B: np.ndarray, end_B: np.ndarray, is_her_B: np.ndarray, k_B: np.ndarray
    ) -> np.ndarray:
        """sum_{i<k} gamma^i r_{t+i} of each transition over its window k_B (1 <= k <= end - t): the n-step
        return with k = min(n, end - t), the return to go with k = end - t. Example, gamma = 0.9: a HER copy
        cut at t* = 4 gives 0.9^(4 - t) at t with k = end - t; a truncated episode that never rewarded, 0.
        """
        i_W = np.arange(int(k_B.max(initial=1)))
        pos_BW = t_B[:, None] + i_W[None, :]  # step index t+i inside the episode
        in_window_BW = i_W[None, :] < k_B[:, None]
        # Outside the window, read row o_0 (always valid) and mask the value away.
        rows_BW = start_B[:, None] + np.where(in_window_BW, pos_BW, 0)
        env_r_BW = self._steps.col("reward")[rows_BW].astype(np.float64)
        # A HER copy's reward is 1 exactly at its cut t* = end - 1 and 0 before (the goal was first
        # achieved there), whatever the environment rewarded for the pursued goal.
        her_r_BW = (pos_BW == end_B[:, None] - 1).astype(np.float64)
        r_BW = np.where(is_her_B[:, None], her_r_BW, env_r_BW) * in_window_BW
        return r_BW @ (self.gamma**i_W)

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """The stored data (numpy arrays and builtins, picklable). Settings (n_step, gamma, strategy)
        are not part of it: they come from the constructor, and n-step targets are computed at sampling."""
        return {
            "format": _STATE_FORMAT,
            "steps": self._steps.state_dict(),
            "episodes": self._episodes.state_dict(),
            "sources": self._sources.state_dict(),
            "index": self._index.state_dict(),
            "observations": self._observations.state_dict(),
            "action_lists": self._action_lists.state_dict(),
            "goals": self._goals.state_dict(),
            "types": list(self._types),
            "n_her": self._n_her,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output exactly: the same rng then draws the same batches."""
        if state.get("format") != _STATE_FORMAT:
            raise ValueError(f"replay buffer state format {state.get('format')!r}, expected {_STATE_FORMAT}")
        n_env = len(state["steps"]["cols"]["obs"]) - len(state["episodes"]["cols"]["T"])
        stored = n_env if self.capacity_counts == "env" else n_env + int(state["n_her"])
        if stored > self.capacity:
            raise ValueError(
                f"saved buffer holds {stored} transitions counted as {self.capacity_counts!r} "
                f"> capacity {self.capacity}"
            )
        self._steps.load_state_dict(state["steps"])
        self._episodes.load_state_dict(state["episodes"])
        self._sources.load_state_dict(state["sources"])
        self._index.load_state_dict(state["index"])
        self._observations.load_state_dict(state["observations"])
        self._action_lists.load_state_dict(state["action_lists"])
        self._goals.load_state_dict(state["goals"])
        self._types = list(state["types"])
        self._n_her = int(state["n_her"])
