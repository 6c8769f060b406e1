"""The social partner against hand-derived descriptions and a brute-force check over every goal."""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence

import numpy as np
import pytest

from sac_glam.envs.goals import Obj, SimpleGoal, goals, parse_goal
from sac_glam.envs.playground_text import (
    PlaygroundText,
    State,
    admissible_codes,
    goal_set,
    make_scene,
    sample_scene,
    transition,
)
from sac_glam.envs.social_partner import Event, hindsight_goals


@functools.cache
def matches(part: SimpleGoal, kind: str, obj: Obj) -> bool:
    return part.verb == kind and part.matches(obj)


def reference_hindsight(events: Sequence[Event], goal_texts: Collection[str]) -> dict[str, int]:
    """Slow and direct: for every goal of the set, its first achieving step from the events."""
    out = {}
    for text in goal_texts:
        goal = parse_goal(text)
        t1 = next((e.step for e in events if matches(goal.first, e.kind, e.obj)), None)
        if t1 is None:
            continue
        if goal.second is None:
            out[text] = t1
            continue
        second = goal.second
        t2 = next((e.step for e in events if e.step >= t1 and matches(second, e.kind, e.obj)), None)
        if t2 is not None:
            out[text] = t2
    return out


def random_events(rng: np.random.Generator, split: str, n_objects: int, n_steps: int) -> list[Event]:
    """A random trajectory through the pure dynamics, in a scene sampled for a random goal (so it has supplies)."""
    pool = goals(split, sequential=n_objects >= 4)  # type: ignore[arg-type]
    scene = make_scene(sample_scene(pool[int(rng.integers(len(pool)))], n_objects, rng))
    state, events = State(), []
    for t in range(n_steps):
        codes = admissible_codes(len(scene), state.held)
        state, event = transition(scene, state, codes[int(rng.integers(len(codes)))])
        if event is not None:
            events.append(Event(t, event[0], scene.objects[event[1]]))
    return events


SCRIPT = [
    "Go to blue chair",  # 0
    "Grasp",  # 1: grasp blue chair
    "Release",  # 2
    "Go to red water",  # 3
    "Grasp",  # 4: grasp red water
    "Go to red cat",  # 5: grow red cat
    "Release",  # 6
    "Go to blue chair",  # 7
    "Grasp",  # 8: grasp blue chair again
]


def expected_scripted_train_hindsight() -> dict[str, int]:
    """Derived by hand from the grammar and the IMAGINE split for SCRIPT's events."""
    chair = [
        "Grasp blue chair",
        "Grasp any chair",
        "Grasp blue furniture",
        "Grasp any furniture",
        "Grasp any blue thing",
    ]
    water = [
        "Grasp red water",
        "Grasp any water",
        "Grasp red supply",
        "Grasp any supply",
        "Grasp any red thing",
    ]
    # "Grow {c} living_thing" is a test goal (a test marker), so it is not described.
    cat = ["Grow red cat", "Grow any cat", "Grow red animal", "Grow any animal", "Grow any red thing"]
    expected = dict.fromkeys(chair, 1) | dict.fromkeys(water, 4) | dict.fromkeys(cat, 5)
    # Grow-then-grasp: only the chair's second grasp (step 8) comes at or after the cat's growth (5);
    # the water was grasped before it (4).
    for a in cat:
        for b in chair:
            expected[f"{a} then g{b[1:]}"] = 8
    # Grow-then-grow: one grow event achieves both parts, whenever their last two words differ.
    for a in cat:
        for b in cat:
            if a.split()[-2:] != b.split()[-2:]:
                expected[f"{a} then g{b[1:]}"] = 5
    return expected


def test_scripted_trajectory_matches_the_hand_derived_description() -> None:
    env = PlaygroundText(split="train")
    # The pursued goal is never achieved here, so the whole script runs.
    env.reset(seed=0, options={"goal": "Grasp green dog", "scene": ["red cat", "blue chair", "red water"]})
    for action in SCRIPT:
        *_, info = env.step(action)
    for _ in range(15 - len(SCRIPT)):
        *_, info = env.step("Go to red cat")  # holding the chair: grows nothing
    expected = expected_scripted_train_hindsight()
    assert len(expected) == 60
    assert info["hindsight"] == expected
    assert info["hindsight"] == reference_hindsight(env.events, goal_set("train", True))
    # Sequential goals take the first second-part event at or after the first part, not the first ever.
    assert expected["Grasp blue chair"] == 1 and expected["Grow red cat then grasp blue chair"] == 8
    assert "Grow red cat then grasp red water" not in expected


def test_goals_of_another_split_are_not_described() -> None:
    events = [Event(0, "grasp", Obj("red", "fly")), Event(3, "grow", Obj("green", "flower"))]
    train = hindsight_goals(events, goal_set("train", True))
    test = hindsight_goals(events, goal_set("test", True))
    assert "Grasp red fly" in test and "Grasp red fly" not in train
    assert "Grow any green thing" in train and "Grow green flower" in test
    assert "Grow green flower then grasp red fly" not in test  # the fly was grasped before the flower grew
    assert test["Grasp any fly"] == 0 and train["Grow any green thing"] == 3


@pytest.mark.parametrize(("split", "n_trajectories"), [("train", 100), ("test", 60)])
def test_equals_brute_force_on_random_trajectories(split: str, n_trajectories: int) -> None:
    rng = np.random.default_rng(123)
    texts = goal_set(split, True)  # type: ignore[arg-type]
    n_sequential = 0
    for _ in range(n_trajectories):
        events = random_events(rng, split, n_objects=6, n_steps=40)
        fast = hindsight_goals(events, texts)
        assert fast == reference_hindsight(events, texts)
        n_sequential += sum(" then " in g for g in fast)
    assert n_sequential > 0  # the random trajectories did exercise sequential goals


def test_equals_brute_force_without_sequential_goals() -> None:
    rng = np.random.default_rng(7)
    texts = goal_set("train", False)
    for _ in range(200):
        events = random_events(rng, "train", n_objects=3, n_steps=20)
        fast = hindsight_goals(events, texts)
        assert fast == reference_hindsight(events, texts)
        assert not any(" then " in g for g in fast)


def test_no_events_no_goals() -> None:
    assert hindsight_goals([], goal_set("train", True)) == {}
