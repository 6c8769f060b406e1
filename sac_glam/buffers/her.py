"""Hindsight Experience Replay (paper Section 2.3, Appendix E): relabelling and batch composition.

Relabelling. Playground-Text's social partner reports, at the end of an episode, every train goal the
trajectory achieved and the first step ``t*`` at which it was achieved (``docs/environment.md``).
Each such goal ``g`` (other than the goal pursued) gives one relabelled copy of the prefix
``0..t*`` of the episode: reward 0 before ``t*``, 1 at ``t*``, and a terminal state after ``t*``. Every
transition ``t <= t*`` thus gets a goal achieved in its future, which is the "future" strategy of
Andrychowicz et al. (2017) using all the partner's goals instead of k sampled ones (Appendix E). The
copies only *refer* to the stored episode (see :class:`~sac_glam.buffers.replay.ReplayBuffer`).

Batch composition (Appendix E). With every partner goal relabelled, HER copies dominate the buffer
(Figure 7) and are mostly simple goals, while the environment's goals are 98% sequential (Figure 4).
Three strategies, as small objects behind one protocol (style point 8):

- :class:`UniformSampling`: uniform over every stored transition (the Figure 7 baseline);
- :class:`RatioSampling`: a fixed share of HER transitions per batch (the paper's choice, 50%);
- :class:`PriorSampling`: goal types follow the environment's goal-type distribution.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import numpy as np

from sac_glam.envs.goals import GOAL_TYPES, Split, goals

#: A group of stored transitions: (is_her, goal type). Strategies pick groups and counts; the buffer
#: keeps one FIFO index per group, so drawing from a union of groups is vectorised.
GroupKey = tuple[bool, str]


def hindsight_relabels(goal: str, hindsight: Mapping[str, int], n_transitions: int) -> list[tuple[str, int]]:
    """The (relabelled goal, cut ``t*``) pairs of an episode, in the partner's order.

    The pursued goal is left out: its copy would duplicate the episode itself (the environment already
    rewarded it). ``t*`` must index a transition: ``0 <= t* < n_transitions``.
    """
    cuts = []
    for g, t_star in hindsight.items():
        if not 0 <= int(t_star) < n_transitions:
            raise ValueError(
                f"hindsight goal {g!r} achieved at t={t_star}, outside the episode's {n_transitions} transitions"
            )
        if g != goal:
            cuts.append((g, int(t_star)))
    return cuts


def goal_type_prior(split: Split = "train", sequential: bool = True) -> dict[str, float]:
    """The goal-type distribution of a goal split (paper Figure 4), for :class:`PriorSampling`.

    Example: the train split gives grasp 136/8470, grow 46/8470, grow_then_grasp 6218/8470,
    grow_then_grow 2070/8470 (sequential goals are 98%).
    """
    counts = Counter(g.goal_type for g in goals(split, sequential))
    total = sum(counts.values())
    return {t: counts[t] / total for t in GOAL_TYPES if counts[t]}


class TransitionGroups(Protocol):
    """What a strategy sees of the buffer: group sizes, and uniform draws from a union of groups."""

    def sizes(self) -> dict[GroupKey, int]:
        """Stored transitions per non-empty group."""
        ...

    def draw(
        self, keys: Sequence[GroupKey], count: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """``count`` transitions uniformly (with replacement) from the union of ``keys``: (source ids, t)."""
        ...


class SamplingStrategy(Protocol):
    """Chooses which stored transitions make up a batch."""

    def draw(
        self, groups: TransitionGroups, batch_size: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """(source ids, t) arrays of shape (B,)."""
        ...


def _concat_shuffled(
    parts: list[tuple[np.ndarray, np.ndarray]], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    # Shuffle so that no slice of the batch (a gradient-accumulation chunk, say) holds only one group.
    src = np.concatenate([p[0] for p in parts])
    t = np.concatenate([p[1] for p in parts])
    perm = rng.permutation(len(src))
    return src[perm], t[perm]


class UniformSampling:
    """Uniform over all stored transitions, environment and HER alike (HER share as in Figure 7)."""

    def draw(
        self, groups: TransitionGroups, batch_size: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        return groups.draw(list(groups.sizes()), batch_size, rng)


class RatioSampling:
    """``round(her_ratio * B)`` transitions from HER copies, the rest from the environment (Appendix E).

    Balancing positives (HER copies always succeed) with mostly negative environment transitions follows
    Colas et al. (2020). Until the first HER copy is stored, the whole batch comes from the environment.
    """

    def __init__(self, her_ratio: float) -> None:
        if not 0.0 <= her_ratio <= 1.0:
            raise ValueError(f"her_ratio must be in [0, 1], got {her_ratio}")
        self.her_ratio = her_ratio

    def draw(
        self, groups: TransitionGroups, batch_size: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        sizes = groups.sizes()
        her_keys = [k for k in sizes if k[0]]
        env_keys = [k for k in sizes if not k[0]]
        n_her = round(self.her_ratio * batch_size) if her_keys else 0
        if not env_keys:  # only HER copies stored (cannot happen with whole episodes; kept total)
            n_her = batch_size
        parts = [groups.draw(her_keys, n_her, rng), groups.draw(env_keys, batch_size - n_her, rng)]
        return _concat_shuffled(parts, rng)


class PriorSampling:
    """Each batch element's goal type is drawn from the environment's goal-type prior (Appendix E).

    Then a transition is drawn uniformly among the stored ones (environment or HER) whose goal has that
    type. Types with no stored transition are dropped and the prior renormalised over the rest, so early
    batches are not starved while, e.g., no sequential goal has been relabelled yet.
    """

    def __init__(self, prior: Mapping[str, float]) -> None:
        if not prior or any(p < 0 for p in prior.values()) or sum(prior.values()) <= 0:
            raise ValueError(
                f"goal_type_prior must have non-negative weights with a positive sum, got {prior}"
            )
        self.prior = dict(prior)

    def draw(
        self, groups: TransitionGroups, batch_size: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        sizes = groups.sizes()
        available = {k[1] for k in sizes}
        types = [t for t, p in self.prior.items() if p > 0 and t in available]
        if not types:
            raise ValueError(f"no stored transition has a goal type of the prior {sorted(self.prior)}")
        p = np.array([self.prior[t] for t in types], dtype=np.float64)
        choice_B = rng.choice(len(types), size=batch_size, p=p / p.sum())
        counts = np.bincount(choice_B, minlength=len(types))
        parts = [
            groups.draw([(her, t) for her in (False, True) if (her, t) in sizes], int(c), rng)
            for t, c in zip(types, counts, strict=True)
        ]
        return _concat_shuffled(parts, rng)


_STRATEGIES: dict[str, Callable[[float, Mapping[str, float] | None], SamplingStrategy]] = {
    "uniform": lambda ratio, prior: UniformSampling(),
    "ratio": lambda ratio, prior: RatioSampling(ratio),
    "prior": lambda ratio, prior: PriorSampling(_required_prior(prior)),
}


def _required_prior(prior: Mapping[str, float] | None) -> Mapping[str, float]:
    if prior is None:
        raise ValueError(
            "her_strategy 'prior' needs goal_type_prior, the environment's goal-type distribution, "
            "e.g. sac_glam.buffers.her.goal_type_prior('train')"
        )
    return prior


def make_strategy(
    name: str, her_ratio: float = 0.5, goal_type_prior: Mapping[str, float] | None = None
) -> SamplingStrategy:
    """The strategy called ``name`` (``uniform``, ``ratio`` or ``prior``; see the module docstring)."""
    if name not in _STRATEGIES:
        raise ValueError(f"unknown her_strategy {name!r}; allowed: {', '.join(_STRATEGIES)}")
    return _STRATEGIES[name](her_ratio, goal_type_prior)
