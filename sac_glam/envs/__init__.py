"""Playground-Text: goal grammar, environment, social partner, scripted expert, vector env."""

from sac_glam.envs.expert import expert_action, expert_episode_length, expert_plan, shortest_plan
from sac_glam.envs.goals import (
    ALL_ACTIONS,
    ALL_OBJECTS,
    GOAL_TYPES,
    Goal,
    Obj,
    SimpleGoal,
    goals,
    parse_goal,
    vocabulary,
)
from sac_glam.envs.playground_text import PlaygroundText
from sac_glam.envs.rules import Scene, State, transition
from sac_glam.envs.social_partner import Event, hindsight_goals
from sac_glam.envs.vector import EpisodeEnd, PlaygroundTextVecEnv, VecObs, VecStep

__all__ = [
    "ALL_ACTIONS",
    "ALL_OBJECTS",
    "GOAL_TYPES",
    "EpisodeEnd",
    "Event",
    "Goal",
    "Obj",
    "PlaygroundText",
    "PlaygroundTextVecEnv",
    "Scene",
    "SimpleGoal",
    "State",
    "VecObs",
    "VecStep",
    "expert_action",
    "expert_episode_length",
    "expert_plan",
    "goals",
    "hindsight_goals",
    "parse_goal",
    "shortest_plan",
    "transition",
    "vocabulary",
]
