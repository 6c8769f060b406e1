"""The vector env: auto-reset, episodes kept apart, determinism and exact checkpoint/restore."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from sac_glam.config import EnvConfig
from sac_glam.envs.expert import expert_action
from sac_glam.envs.vector import PlaygroundTextVecEnv, VecObs, VecStep
from sac_glam.prompts import render_prompt

FIRST_STATE_LINES = ["You are on: nothing", "You are holding: nothing", "You have grown: nothing"]


def random_ids(obs: VecObs, rng: np.random.Generator) -> np.ndarray:
    return np.array([rng.integers(len(a)) for a in obs.actions])


def assert_same_step(a: VecStep, b: VecStep) -> None:
    assert a.obs == b.obs
    np.testing.assert_array_equal(a.rewards, b.rewards)
    np.testing.assert_array_equal(a.terminated, b.terminated)
    np.testing.assert_array_equal(a.truncated, b.truncated)
    assert a.ends == b.ends


def test_reset_shapes_and_prompts() -> None:
    vec = PlaygroundTextVecEnv(EnvConfig(n_envs=4), seed=0)
    obs = vec.reset()
    assert all(len(field) == 4 for field in obs)
    assert obs.prompts == [render_prompt(o, g) for o, g in zip(obs.observations, obs.goals, strict=True)]
    assert all(o.splitlines()[1:] == FIRST_STATE_LINES for o in obs.observations)
    assert len(set(obs.observations)) == 4  # each env has its own seed stream
    step = vec.step([0, 0, 0, 0])
    assert step.rewards.dtype == np.float32 and step.rewards.shape == (4,)
    assert step.terminated.dtype == bool and step.truncated.dtype == bool


def test_episodes_of_different_lengths_are_kept_apart() -> None:
    vec = PlaygroundTextVecEnv(EnvConfig(n_envs=2, max_steps=15), seed=3)
    obs = vec.reset()
    expert_env, idle_env = vec.envs
    first_goal_1 = obs.goals[1]
    n_successes = 0
    for t in range(15):
        # Env 0 follows the expert (short successful episodes); env 1 only releases with empty hands
        # (a no-op), so it runs to the step limit.
        ids = [obs.actions[0].index(expert_action(expert_env)), len(obs.actions[1]) - 1]
        assert obs.actions[1][ids[1]] == "Release"
        step = vec.step(ids)
        end0, end1 = step.ends
        if end0 is not None:
            n_successes += 1
            assert end0.success and end0.terminated and not end0.truncated and step.rewards[0] == 1.0
            assert end0.hindsight[end0.goal] == end0.length - 1
            assert end0.final_observation != step.obs.observations[0]
            # The next observation is the first of env 0's new episode.
            assert step.obs.observations[0].splitlines()[1:] == FIRST_STATE_LINES
            assert expert_env.t == 0 and step.obs.goals[0] == expert_env.goal.text
        else:
            assert step.rewards[0] == 0.0 and not step.terminated[0]
        if t < 14:
            assert end1 is None and not step.truncated[1] and idle_env.t == t + 1
            assert step.obs.goals[1] == first_goal_1
        obs = step.obs
    assert n_successes >= 2
    assert end1 is not None and end1.truncated and not end1.terminated and not end1.success
    assert end1.length == 15 and end1.goal == first_goal_1 and step.rewards[1] == 0.0
    assert end1.final_actions[-2:] == ["Grasp", "Release"]


def test_deterministic_given_the_seed() -> None:
    config = EnvConfig(n_envs=3, max_steps=8)
    a, b = PlaygroundTextVecEnv(config, seed=5), PlaygroundTextVecEnv(config, seed=5)
    obs_a, obs_b = a.reset(), b.reset()
    assert obs_a == obs_b
    assert PlaygroundTextVecEnv(config, seed=6).reset() != obs_a
    rng = np.random.default_rng(0)
    for _ in range(50):
        ids = random_ids(obs_a, rng)
        step_a, step_b = a.step(ids), b.step(ids)
        assert_same_step(step_a, step_b)
        obs_a = step_a.obs


@pytest.mark.parametrize("how", ["state_dict", "pickle"])
def test_restore_mid_episode_is_exact(how: str) -> None:
    config = EnvConfig(n_envs=4, max_steps=10)
    vec = PlaygroundTextVecEnv(config, seed=11)
    rng = np.random.default_rng(1)
    obs = vec.reset()
    for _ in range(13):  # mid-episode for every env (13 is not a multiple of the step limit)
        obs = vec.step(random_ids(obs, rng)).obs
    if how == "state_dict":
        copy = PlaygroundTextVecEnv(config, seed=999)  # a different seed: the state must override it
        copy.load_state_dict(pickle.loads(pickle.dumps(vec.state_dict())))
    else:
        copy = pickle.loads(pickle.dumps(vec))
    assert copy.observe() == obs
    for _ in range(100):  # many auto-resets: RNG streams must have been restored too
        ids = random_ids(obs, rng)
        step = vec.step(ids)
        assert_same_step(step, copy.step(ids))
        obs = step.obs


def test_action_index_errors_name_the_env() -> None:
    vec = PlaygroundTextVecEnv(EnvConfig(n_envs=2), seed=0)
    obs = vec.reset()
    bad = len(obs.actions[1])
    with pytest.raises(ValueError, match=rf"env 1: action index {bad} out of range"):
        vec.step([0, bad])
    with pytest.raises(ValueError, match="env 0: action index -1"):
        vec.step([-1, 0])
    with pytest.raises(ValueError, match="2 integers"):
        vec.step([0])
    # Nothing was stepped by the failed calls.
    assert [env.t for env in vec.envs] == [0, 0]


def test_small_variant_vector_env() -> None:
    vec = PlaygroundTextVecEnv(EnvConfig(n_envs=8, n_objects=3, sequential_goals=False, max_steps=20), seed=0)
    obs = vec.reset()
    rng = np.random.default_rng(0)
    reported: set[str] = set()
    for _ in range(200):
        assert set(obs.goal_types) <= {"grasp", "grow"}
        step = vec.step(random_ids(obs, rng))
        for end in step.ends:
            if end is not None:
                reported |= set(end.hindsight)
        obs = step.obs
    assert reported and not any(" then " in g for g in reported)
