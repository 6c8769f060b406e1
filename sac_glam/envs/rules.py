"""The rules of Playground-Text as pure functions (paper Appendix A; ``docs/environment.md``).

A :class:`Scene` (the episode's objects), a :class:`State` (where the agent stands, what it holds, what
it has grown) and :func:`transition`, the one copy of the dynamics: the environment
(:mod:`sac_glam.envs.playground_text`), the scripted expert's search (:mod:`sac_glam.envs.expert`),
``sac-glam bench heldout`` and the tests all step through it. Also what an episode draws: the goal
pool of a split (:func:`sampling_goals`) and a scene where the goal can be achieved
(:func:`sample_scene`). No text here but object names: the environment renders observations.

Actions are encoded per scene as integers: ``i < N`` is ``Go to {scene object i}``, ``N`` is
``Grasp``, ``N + 1`` is ``Release``. The admissible list is ``Go to`` every object not held (scene
order), then ``Grasp``, ``Release``; e.g. with N = 3 and object 1 held the admissible codes are
``[0, 2, 3, 4]``. Useless actions (``Grasp`` with full hands) are no-op steps, as ``docs/environment.md`` specifies.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np

from sac_glam.config import EnvConfig
from sac_glam.envs.goals import ALL_OBJECTS, GOAL_TYPES, Goal, Obj, SimpleGoal, Verb, goals

OBJECT_INDEX: dict[Obj, int] = {o: i for i, o in enumerate(ALL_OBJECTS)}
OBJECT_BY_NAME: dict[str, Obj] = {str(o): o for o in ALL_OBJECTS}


def can_grow(supply: Obj, living: Obj) -> bool:
    """Whether holding/bringing ``supply`` grows ``living``: plants need water; animals water or food."""
    if supply.type == "water":
        return living.living
    return supply.type == "food" and living.category == "animal"


#: GROWERS[i]: indices (in ALL_OBJECTS) of the supplies that grow object i; empty for non-living objects.
GROWERS: tuple[frozenset[int], ...] = tuple(
    frozenset(j for j, s in enumerate(ALL_OBJECTS) if s.category == "supply" and can_grow(s, o))
    for o in ALL_OBJECTS
)


@functools.cache
def matching_objects(part: SimpleGoal) -> frozenset[int]:
    """Indices (in ALL_OBJECTS) of the objects whose grasp (grow) event achieves ``part``."""
    return frozenset(i for i, o in enumerate(ALL_OBJECTS) if part.matches(o))


@dataclass(frozen=True)
class Scene:
    """The objects of an episode, with what the dynamics and rendering precompute from them."""

    objects: tuple[Obj, ...]
    names: tuple[str, ...]
    """``str(obj)`` for each object ("green mouse")."""
    growers: tuple[frozenset[int], ...]
    """growers[i]: scene indices of the supplies that grow object i (empty when i is not living)."""

    def __len__(self) -> int:
        return len(self.objects)


def make_scene(objects: Sequence[Obj]) -> Scene:
    """A :class:`Scene` of distinct objects, in the given (display) order."""
    if len(set(objects)) != len(objects):
        raise ValueError(f"scene objects must be distinct, got {[str(o) for o in objects]}")
    ids = [OBJECT_INDEX[o] for o in objects]
    growers = tuple(frozenset(j for j, gj in enumerate(ids) if gj in GROWERS[gi]) for gi in ids)
    return Scene(tuple(objects), tuple(str(o) for o in objects), growers)


class State(NamedTuple):
    """The agent's state: the scene object it stands on, the one it holds, and those grown (in order)."""

    on: int | None = None
    held: int | None = None
    grown: tuple[int, ...] = ()


GrowOrGrasp = tuple[Verb, int]
"""An event of a transition: (kind, scene index of the object)."""


def transition(scene: Scene, state: State, action: int) -> tuple[State, GrowOrGrasp | None]:
    """The next state and the event (if any) of taking admissible action code ``action``.

    A transition produces at most one event: ``Grasp`` may grasp one object, and a ``Go to`` may grow
    one object (the destination, or the held living thing when the destination is a supply for it).
    The caller guarantees ``action`` is admissible (:func:`admissible_codes`).
    """
    on, held, grown = state
    n = len(scene.objects)
    if action < n:  # Go to
        if action == on:
            return state, None
        if held is not None:
            # Holding a supply, arriving at a living thing it grows.
            if held in scene.growers[action] and action not in grown:
                return State(action, held, (*grown, action)), ("grow", action)
            # Holding a living thing, arriving at a supply that grows it.
            if action in scene.growers[held] and held not in grown:
                return State(action, held, (*grown, held)), ("grow", held)
        return State(action, held, grown), None
    if action == n:  # Grasp
        if held is None and on is not None:
            return State(None, on, grown), ("grasp", on)
        return state, None
    # Release: put the object down where the agent is; the agent now stands on it.
    if held is not None:
        return State(held, None, grown), None
    return state, None


def admissible_codes(n_objects: int, held: int | None) -> tuple[int, ...]:
    """Action codes offered in a state: ``Go to`` each object not held, then Grasp, Release."""
    return _admissible_codes(n_objects, -1 if held is None else held)


@functools.cache
def _admissible_codes(n_objects: int, held: int) -> tuple[int, ...]:
    return (*(i for i in range(n_objects) if i != held), n_objects, n_objects + 1)


PartMasks = tuple[tuple[Verb, frozenset[int]], ...]
"""Per goal part: its verb and the scene indices whose event of that verb achieves it."""


def part_masks(goal: Goal, scene: Scene) -> PartMasks:
    """Which scene objects achieve each part of ``goal``."""
    ids = [OBJECT_INDEX[o] for o in scene.objects]
    return tuple(
        (p.verb, frozenset(i for i, gi in enumerate(ids) if gi in matching_objects(p))) for p in goal.parts
    )


def advance_progress(masks: PartMasks, progress: int, event: GrowOrGrasp | None) -> int:
    """Goal parts achieved after ``event``; the goal is achieved when this reaches ``len(masks)``.

    One event may achieve several consecutive parts: growing the red cat achieves both parts of
    ``Grow any animal then grow red cat``, since the second part is achieved *at or after* the first.
    """
    if event is None:
        return progress
    kind, idx = event
    while progress < len(masks):
        verb, mask = masks[progress]
        if verb != kind or idx not in mask:
            break
        progress += 1
    return progress


def objects_needed(goal: Goal) -> int:
    """Scene objects :func:`sample_scene` places for ``goal``: one per part, plus a supply per Grow part."""
    return sum(2 if p.verb == "grow" else 1 for p in goal.parts)


def sample_scene(goal: Goal, n_objects: int, rng: np.random.Generator) -> tuple[Obj, ...]:
    """A random scene of ``n_objects`` distinct objects in which ``goal`` can be achieved.

    For each part: a distinct object matching it (living, for Grow), and for a Grow part a distinct
    supply that grows that object (water for a plant; water or food for an animal; random colour).
    Then random distinct objects up to ``n_objects``, and a shuffle so that the goal's objects are not
    always first.
    """
    need = objects_needed(goal)
    if not need <= n_objects <= len(ALL_OBJECTS):
        raise ValueError(
            f"n_objects={n_objects} cannot hold goal {goal.text!r}: it needs at least {need} objects "
            f"(one per part, plus a supply per Grow part) and at most {len(ALL_OBJECTS)}"
        )
    # The most constrained part picks first: in "Grow any animal then grasp red cat" the red cat must be
    # the second part's object, or both parts could need the same (single) object. Supplies come
    # after the parts' objects for the same reason ("... then grasp red water").
    parts = sorted(goal.parts, key=lambda p: len(matching_objects(p)))
    chosen: list[int] = []
    for part in parts:
        candidates = sorted(matching_objects(part).difference(chosen))
        chosen.append(candidates[int(rng.integers(len(candidates)))])
    for part, obj in zip(parts, list(chosen), strict=True):
        if part.verb == "grow":
            supplies = sorted(GROWERS[obj].difference(chosen))
            chosen.append(supplies[int(rng.integers(len(supplies)))])
    taken = set(chosen)
    for i in rng.permutation(len(ALL_OBJECTS)):
        if len(chosen) == n_objects:
            break
        if int(i) not in taken:
            chosen.append(int(i))
    return tuple(ALL_OBJECTS[chosen[i]] for i in rng.permutation(n_objects))


@functools.cache
def goal_set(split: Literal["train", "test"], sequential: bool) -> frozenset[str]:
    """The goal texts the social partner may report for an environment of this split."""
    return frozenset(g.text for g in goals(split, sequential))


def sampling_goals(config: EnvConfig, split: Literal["train", "test"]) -> tuple[tuple[Goal, ...], int]:
    """The goals :meth:`PlaygroundText.reset` samples from (uniformly), and the scene size they need.

    The goal set is split x ``sequential_goals`` x ``goal_types`` (empty: every type).
    """
    unknown = sorted(set(config.goal_types) - set(GOAL_TYPES))
    if unknown:
        raise ValueError(f"unknown goal_types {unknown}; allowed: {', '.join(GOAL_TYPES)}")
    pool, need = _goal_pool(split, config.sequential_goals, tuple(sorted(set(config.goal_types))))
    if not pool:
        raise ValueError(
            f"no {split} goal has a type in {config.goal_types} with sequential_goals={config.sequential_goals}"
        )
    return pool, need


@functools.cache
def _goal_pool(
    split: Literal["train", "test"], sequential: bool, goal_types: tuple[str, ...]
) -> tuple[tuple[Goal, ...], int]:
    # Cached: a vector env builds one environment per slot, and filtering 8,470 goals each time adds up.
    pool = goals(split, sequential)
    if goal_types:
        pool = tuple(g for g in pool if g.goal_type in goal_types)
    return pool, max((objects_needed(g) for g in pool), default=0)
