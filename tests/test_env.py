"""Playground-Text dynamics, rewards, scenes, observations and errors (``docs/environment.md``)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

from sac_glam.config import EnvConfig
from sac_glam.envs.expert import expert_action, expert_episode_length
from sac_glam.envs.goals import ALL_ACTIONS, Obj, goals, parse_goal, simple_goals, vocabulary
from sac_glam.envs.playground_text import (
    PlaygroundText,
    State,
    goal_set,
    make_scene,
    objects_needed,
    transition,
)
from sac_glam.prompts import render_prompt

#: Hand bounds on the optimal episode length. Grasp: Go to, Grasp. Grow: Go to a supply, Grasp, Go to
#: the living thing. Sequential: the first part (3), then at worst Release, Go to, Grasp (grasp) or
#: Release, Go to another supply, Grasp, Go to the second living thing (grow).
MAX_LENGTH = {"grasp": 2, "grow": 3, "grow_then_grasp": 6, "grow_then_grow": 7}
MIN_LENGTH = {"grasp": 2, "grow": 3, "grow_then_grasp": 4, "grow_then_grow": 3}


def run_expert(
    env: PlaygroundText, **reset_kwargs: Any
) -> tuple[list[float], bool, bool, dict[str, Any], int]:
    """Reset, then follow the expert to the end; returns rewards, terminated, truncated, last info, optimum."""
    env.reset(**reset_kwargs)
    optimum = expert_episode_length(env)
    rewards: list[float] = []
    while True:
        _, reward, terminated, truncated, info = env.step(expert_action(env))
        rewards.append(reward)
        if terminated or truncated:
            return rewards, terminated, truncated, info, optimum


def check_expert_episode(env: PlaygroundText, **reset_kwargs: Any) -> None:
    rewards, terminated, truncated, info, optimum = run_expert(env, **reset_kwargs)
    goal_type = info["goal_type"]
    assert terminated and not truncated and info["success"]
    # Reward 1 exactly on the achieving (last) step, 0 before.
    assert rewards == [0.0] * (len(rewards) - 1) + [1.0]
    assert len(rewards) == optimum
    assert MIN_LENGTH[goal_type] <= optimum <= MAX_LENGTH[goal_type]
    # The social partner agrees: the pursued goal was first achieved at the last step.
    assert info["hindsight"][info["goal"]] == len(rewards) - 1


@pytest.mark.parametrize("split", ["train", "test"])
def test_expert_achieves_sampled_goals_optimally(split: str) -> None:
    env = PlaygroundText(split=split)  # type: ignore[arg-type]
    for seed in range(500):
        check_expert_episode(env, seed=seed)


@pytest.mark.parametrize("split", ["train", "test"])
def test_expert_achieves_every_simple_goal(split: str) -> None:
    # Sampled goals are 98% sequential, so every simple goal is also forced once.
    env = PlaygroundText(split=split)  # type: ignore[arg-type]
    for i, goal in enumerate(simple_goals(split)):  # type: ignore[arg-type]
        check_expert_episode(env, seed=i, options={"goal": goal.text})


def test_expert_in_the_smallest_scenes() -> None:
    # A scene with exactly the objects the goal needs must still be achievable.
    rng = np.random.default_rng(0)
    pool = goals("train")
    envs = {
        1: PlaygroundText(EnvConfig(n_objects=1, sequential_goals=False, goal_types=["grasp"])),
        2: PlaygroundText(EnvConfig(n_objects=2, sequential_goals=False)),
        3: PlaygroundText(EnvConfig(n_objects=3, goal_types=["grasp", "grow", "grow_then_grasp"])),
        4: PlaygroundText(EnvConfig(n_objects=4)),
    }
    for k in rng.choice(len(pool), 300, replace=False):
        goal = pool[int(k)]
        check_expert_episode(envs[objects_needed(goal)], seed=int(k), options={"goal": goal.text})


def test_sequential_goal_needs_its_parts_in_order() -> None:
    env = PlaygroundText()
    env.reset(
        seed=0,
        options={
            "goal": "Grow red cat then grasp blue chair",
            "scene": ["red cat", "blue chair", "red water"],
        },
    )
    script = [
        "Go to blue chair",  # 0
        "Grasp",  # 1: second part before the first: not achieved
        "Release",  # 2
        "Go to red water",  # 3
        "Grasp",  # 4
        "Go to red cat",  # 5: red cat grows, first part achieved
        "Release",  # 6
        "Go to blue chair",  # 7
        "Grasp",  # 8: second part after the first: achieved
    ]
    rewards = []
    for action in script:
        _, reward, terminated, truncated, info = env.step(action)
        rewards.append(reward)
        assert not truncated
    assert rewards == [0.0] * 8 + [1.0] and terminated
    assert [(e.step, e.kind, str(e.obj)) for e in env.events] == [
        (1, "grasp", "blue chair"),
        (4, "grasp", "red water"),
        (5, "grow", "red cat"),
        (8, "grasp", "blue chair"),
    ]
    assert info["hindsight"]["Grasp blue chair"] == 1


def test_one_grow_event_can_achieve_both_parts() -> None:
    env = PlaygroundText()
    env.reset(
        seed=0, options={"goal": "Grow any animal then grow red cat", "scene": ["red cat", "red water"]}
    )
    rewards = [env.step(a)[1] for a in ("Go to red water", "Grasp", "Go to red cat")]
    assert rewards == [0.0, 0.0, 1.0] and env.done


def test_truncation_at_the_step_limit() -> None:
    env = PlaygroundText(EnvConfig(max_steps=5))
    env.reset(seed=3)
    for t in range(5):
        # Release with empty hands: a no-op step.
        _, reward, terminated, truncated, info = env.step("Release")
        assert reward == 0.0 and not terminated
        assert truncated == (t == 4)
    assert info["success"] is False and info["hindsight"] == {}
    with pytest.raises(RuntimeError, match="reset"):
        env.step("Release")


def test_success_on_the_last_allowed_step_terminates() -> None:
    env = PlaygroundText(EnvConfig(max_steps=2))
    env.reset(seed=0, options={"goal": "Grasp red cat"})
    env.step("Go to red cat")
    _, reward, terminated, truncated, _ = env.step("Grasp")
    assert reward == 1.0 and terminated and not truncated


def test_same_seed_same_episode_different_seeds_different_scenes() -> None:
    a, b = PlaygroundText(), PlaygroundText()
    rng = np.random.default_rng(0)
    for seed in range(20):
        obs_a, info_a = a.reset(seed=seed)
        obs_b, info_b = b.reset(seed=seed)
        assert (obs_a, info_a) == (obs_b, info_b)
        while not a.done:
            i = int(rng.integers(len(a.admissible_actions)))
            assert a.step_index(i) == b.step_index(i)
    scenes = {PlaygroundText().reset(seed=seed)[0].splitlines()[0] for seed in range(100)}
    assert len(scenes) >= 95


def test_scenes_hold_distinct_objects_with_the_goal_objects_anywhere() -> None:
    env = PlaygroundText()
    positions = set()
    for seed in range(200):
        env.reset(seed=seed, options={"goal": "Grasp red cat"})
        objects = env.scene.objects
        assert len(objects) == 6 and len(set(objects)) == 6
        positions.add(objects.index(Obj("red", "cat")))
    assert positions == set(range(6))  # shuffled, not always first


def test_goal_objects_and_supplies_are_placed() -> None:
    env = PlaygroundText()
    for seed in range(300):
        env.reset(seed=seed)
        goal = env.goal
        for part in goal.parts:
            matching = [o for o in env.scene.objects if part.matches(o)]
            assert matching, (goal.text, env.scene.names)
            if part.verb == "grow":
                assert any(o.category == "supply" for o in env.scene.objects)


def test_scene_too_small_for_the_goals_is_an_error() -> None:
    with pytest.raises(ValueError, match="n_objects"):
        PlaygroundText(EnvConfig(n_objects=3))  # grow-then-grow goals need 4 objects
    PlaygroundText(EnvConfig(n_objects=3, sequential_goals=False))


def growth_after(objects: list[str], actions: list[int]) -> tuple[State, list[tuple[str, str]]]:
    """Run action codes through the pure transition from the initial state; events as (kind, object)."""
    scene = make_scene([Obj(*o.split()) for o in objects])
    state, events = State(), []
    for code in actions:
        state, event = transition(scene, state, code)
        if event is not None:
            events.append((event[0], scene.names[event[1]]))
    return state, events


GO0, GO1, GO2 = 0, 1, 2


def test_growth_rules() -> None:
    grasp = 3  # with 3 objects: Go to 0..2, Grasp = 3, Release = 4
    # Holding a supply, going to a living thing.
    grow_with = {
        ("water", "rose"): True,
        ("food", "rose"): False,  # plants need water
        ("water", "cat"): True,
        ("food", "cat"): True,  # animals grow with water or food
        ("water", "chair"): False,  # furniture never grows
        ("food", "sofa"): False,
        ("water", "food"): False,
    }
    for (supply, target), grows in grow_with.items():
        _, events = growth_after([f"red {supply}", f"blue {target}", "green lamp"], [GO0, grasp, GO1])
        assert (("grow", f"blue {target}") in events) == grows, (supply, target)
        # The other order: holding the living thing, going to the supply.
        _, events = growth_after([f"red {supply}", f"blue {target}", "green lamp"], [GO1, grasp, GO0])
        assert (("grow", f"blue {target}") in events) == grows, (supply, target)


def test_supplies_are_not_consumed_and_objects_grow_once() -> None:
    grasp, release = 3, 4
    state, events = growth_after(["red water", "blue rose", "green cat"], [GO0, grasp, GO1, GO2, GO1, GO2])
    assert events == [("grasp", "red water"), ("grow", "blue rose"), ("grow", "green cat")]
    assert state.grown == (1, 2) and state.held == 0
    # Release puts the object down where the agent is, and the agent stands on it.
    state, _ = growth_after(["red water", "blue rose", "green cat"], [GO0, grasp, GO1, release])
    assert state == State(on=0, held=None, grown=(1,))


def test_useless_actions_are_no_op_steps() -> None:
    grasp, release = 3, 4
    state, events = growth_after(["red water", "blue rose", "green cat"], [grasp, release, GO1, GO1])
    assert state == State(on=1) and events == []
    state, events = growth_after(["red water", "blue rose", "green cat"], [GO0, grasp, GO1, grasp])
    assert state.held == 0 and [e for e in events if e[0] == "grasp"] == [("grasp", "red water")]


def test_observation_format_and_prompt() -> None:
    env = PlaygroundText()
    obs, info = env.reset(
        seed=0, options={"goal": "Grow red cat", "scene": ["red cat", "blue water", "red sofa"]}
    )
    assert obs == (
        "You see: red cat, blue water, red sofa\nYou are on: nothing\nYou are holding: nothing\nYou have grown: nothing"
    )
    assert info["admissible_actions"] == [
        "Go to red cat",
        "Go to blue water",
        "Go to red sofa",
        "Grasp",
        "Release",
    ]
    assert info["prompt"] == render_prompt(obs, "Grow red cat") == f"Goal: Grow red cat\n{obs}\nAction:"
    env.step("Go to blue water")
    obs, *_, info = env.step("Grasp")
    assert obs.splitlines() == [
        "You see: red cat, red sofa",
        "You are on: nothing",
        "You are holding: blue water",
        "You have grown: nothing",
    ]
    assert info["admissible_actions"] == ["Go to red cat", "Go to red sofa", "Grasp", "Release"]
    obs, *_ = env.step("Go to red cat")
    assert obs.splitlines()[1:] == [
        "You are on: red cat",
        "You are holding: blue water",
        "You have grown: red cat",
    ]


def test_observations_use_only_the_vocabulary_and_spaces() -> None:
    words = set(vocabulary())
    env = PlaygroundText()
    rng = np.random.default_rng(1)
    for seed in range(50):
        obs, info = env.reset(seed=seed)
        while True:
            assert env.observation_space.contains(obs)
            assert set(re.findall(r"\w+|[:,]", info["prompt"])) <= words
            assert set(info["admissible_actions"]) <= set(ALL_ACTIONS)
            obs, _, terminated, truncated, info = env.step_index(
                int(rng.integers(len(info["admissible_actions"])))
            )
            if terminated or truncated:
                break


def test_non_admissible_action_names_it_and_lists_the_admissible_ones() -> None:
    env = PlaygroundText()
    env.reset(seed=0, options={"goal": "Grasp blue water", "scene": ["red cat", "blue water"]})
    env.step("Go to red cat")
    env.step("Grasp")
    with pytest.raises(
        ValueError, match=r"'Go to red cat' is not admissible.*'Go to blue water', 'Grasp', 'Release'"
    ):
        env.step("Go to red cat")  # it is held
    with pytest.raises(ValueError, match="out of range"):
        env.step_index(3)


def test_unknown_goal_and_goal_type_errors() -> None:
    env = PlaygroundText()
    with pytest.raises(ValueError, match=r"unknown goal 'Grasp red unicorn'.*sac-glam goals"):
        env.reset(options={"goal": "Grasp red unicorn"})
    with pytest.raises(ValueError, match=r"grasp, grow, grow_then_grasp, grow_then_grow"):
        PlaygroundText(EnvConfig(goal_types=["push"]))
    with pytest.raises(RuntimeError, match="reset"):
        PlaygroundText().step("Grasp")


def test_goal_types_filter() -> None:
    env = PlaygroundText(EnvConfig(goal_types=["grow", "grow_then_grow"]))
    types = {env.reset(seed=s)[1]["goal_type"] for s in range(100)}
    assert types == {"grow", "grow_then_grow"}


def test_small_variant_has_simple_goals_only() -> None:
    # Appendix B's ablation: N = 3 objects, no sequential goals, in goals and in hindsight alike.
    env = PlaygroundText(EnvConfig(n_objects=3, sequential_goals=False, max_steps=30))
    rng = np.random.default_rng(0)
    reported: set[str] = set()
    for seed in range(300):
        _, info = env.reset(seed=seed)
        assert " then " not in info["goal"] and len(env.scene) == 3
        while not env.done:
            _, _, _, _, info = env.step_index(int(rng.integers(len(env.admissible_actions))))
        reported |= set(info["hindsight"])
    assert reported and not any(" then " in g for g in reported)
    assert any(g.startswith("Grow") for g in reported)


def test_hindsight_stays_in_the_split() -> None:
    env = PlaygroundText(EnvConfig(max_steps=40), split="test")
    rng = np.random.default_rng(0)
    test_goals = goal_set("test", True)
    reported: set[str] = set()
    for seed in range(100):
        env.reset(seed=seed)
        while not env.done:
            _, _, _, _, info = env.step_index(int(rng.integers(len(env.admissible_actions))))
        reported |= set(info["hindsight"])
    assert reported and reported <= test_goals
    assert any(" then " in g for g in reported)


def test_state_dict_resumes_mid_episode() -> None:
    env = PlaygroundText()
    env.reset(seed=7, options={"goal": "Grow red cat then grasp blue chair"})
    for a in (0, 3, 1):
        env.step_index(a)
    copy = PlaygroundText()
    copy.load_state_dict(env.state_dict())
    assert (copy.observation, copy.admissible_actions, copy.events, copy.progress) == (
        env.observation,
        env.admissible_actions,
        env.events,
        env.progress,
    )
    rng = np.random.default_rng(0)
    for _ in range(60):  # across several resets, so the RNG state must match too
        if env.done:
            assert env.reset() == copy.reset()
        i = int(rng.integers(len(env.admissible_actions)))
        assert env.step_index(i) == copy.step_index(i)


def test_parse_goal_is_used_for_forced_goals() -> None:
    env = PlaygroundText()
    _, info = env.reset(seed=0, options={"goal": "  Grasp red cat "})
    assert env.goal == parse_goal("Grasp red cat") and info["goal"] == "Grasp red cat"
