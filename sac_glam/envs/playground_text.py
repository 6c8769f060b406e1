"""Playground-Text: one environment (paper Appendix A; ``docs/environment.md``).

The dynamics are one pure function, :func:`~sac_glam.envs.rules.transition`, over a
:class:`~sac_glam.envs.rules.Scene` and a :class:`~sac_glam.envs.rules.State`
(:mod:`sac_glam.envs.rules`, which also holds the action codes and the goal and scene sampling); the
environment, the scripted expert's search (:mod:`sac_glam.envs.expert`) and the tests all step through
it, so there is a single copy of the rules. This module keeps an episode's state and renders it as text:
the observation, the admissible actions, the prompt, and checkpoints. It re-exports the rules' names,
which were defined here before.

Steps are transition indices: the action taken at step ``t`` (0-based) yields reward ``r_t``, and
events (grasp/grow) are stamped with that ``t``. Achieving the goal at step ``t`` gives reward 1 and
terminates; after ``max_steps`` transitions without success the episode is truncated (never both:
success on the last allowed step is a termination).
"""

from __future__ import annotations

import string
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from sac_glam.config import EnvConfig
from sac_glam.envs.goals import ALL_OBJECTS, Goal, parse_goal
from sac_glam.envs.rules import (
    GROWERS,
    OBJECT_BY_NAME,
    OBJECT_INDEX,
    GrowOrGrasp,
    PartMasks,
    Scene,
    State,
    admissible_codes,
    advance_progress,
    can_grow,
    goal_set,
    make_scene,
    matching_objects,
    objects_needed,
    part_masks,
    sample_scene,
    sampling_goals,
    transition,
)
from sac_glam.envs.social_partner import Event, hindsight_goals
from sac_glam.prompts import render_prompt

__all__ = [
    "GROWERS",
    "OBJECT_BY_NAME",
    "OBJECT_INDEX",
    "Event",
    "GrowOrGrasp",
    "PartMasks",
    "PlaygroundText",
    "Scene",
    "State",
    "admissible_codes",
    "advance_progress",
    "can_grow",
    "goal_set",
    "make_scene",
    "matching_objects",
    "objects_needed",
    "part_masks",
    "sample_scene",
    "sampling_goals",
    "transition",
]

GRASP = "Grasp"
RELEASE = "Release"
NOTHING = "nothing"
#: Every character an observation, prompt or action can contain (for the gymnasium Text spaces).
CHARSET = string.ascii_letters + string.digits + " :,_\n"


class PlaygroundText(gym.Env[str, str]):
    """Playground-Text as a gymnasium environment with text observations and text actions.

    Observations are the four-line scene text (``You see`` / ``You are on`` / ``You are holding`` /
    ``You have grown``) *without* the goal, since HER relabels goals; the goal and the LLM prompt
    (:func:`sac_glam.prompts.render_prompt`) are in ``info``. Actions are strings taken from
    ``info["admissible_actions"]`` (the ``Text`` action space only bounds their characters and length;
    it cannot express which actions a state admits). :meth:`step_index` takes an index into that list.

    ``info`` always holds ``goal``, ``goal_type``, ``admissible_actions`` and ``prompt``; at the end of
    an episode also ``success`` and ``hindsight`` (goal text -> first achieving step, from the social
    partner, over the goals of this split; sequential ones only with ``sequential_goals``).
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (gymnasium's class attribute)

    def __init__(self, config: EnvConfig | None = None, split: Literal["train", "test"] = "train") -> None:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        self.config = config if config is not None else EnvConfig()
        self.split: Literal["train", "test"] = split
        if self.config.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.config.max_steps}")
        self.goal_pool, need = sampling_goals(self.config, split)
        if not need <= self.config.n_objects <= len(ALL_OBJECTS):
            raise ValueError(
                f"n_objects={self.config.n_objects}: the sampled goals need between {need} and "
                f"{len(ALL_OBJECTS)} objects per scene (grow-then-grow goals need 4; with 3 objects use "
                "sequential_goals=False, as the paper's N = 3 ablation)"
            )
        self.goal_texts = goal_set(split, self.config.sequential_goals)
        n = self.config.n_objects
        self.observation_space = gym.spaces.Text(max_length=100 + 60 * n, charset=CHARSET)
        self.action_space = gym.spaces.Text(max_length=64, charset=CHARSET)
        self._goal: Goal | None = None
        self._done = True
        # Episode state, set by _start() (declared here for readers and type checkers).
        self._goal_text = ""
        self._goal_type = ""
        self._scene = make_scene(())
        self._masks: PartMasks = ()
        self._state = State()
        self._t = 0
        self._progress = 0
        self._events: list[Event] = []
        self._by_held: dict[int, tuple[tuple[int, ...], tuple[str, ...], str]] = {}
        self._codes: tuple[int, ...] = ()
        self._actions: tuple[str, ...] = ()
        self._see_line = ""
        self._on_lines: list[str] = []
        self._holding_lines: list[str] = []
        self._grown_line = ""
        self._obs = ""

    # ----------------------------------------------------------------- episode state (read-only views)
    @property
    def goal(self) -> Goal:
        """The goal pursued in the current episode."""
        if self._goal is None:
            raise RuntimeError("no episode yet: call reset()")
        return self._goal

    @property
    def scene(self) -> Scene:
        return self._scene

    @property
    def state(self) -> State:
        return self._state

    @property
    def progress(self) -> int:
        """Goal parts achieved so far (the goal is achieved at ``len(goal.parts)``)."""
        return self._progress

    @property
    def masks(self) -> PartMasks:
        return self._masks

    @property
    def t(self) -> int:
        """Transitions taken in this episode."""
        return self._t

    @property
    def done(self) -> bool:
        """Whether the episode has ended (terminated or truncated); step() then needs a reset()."""
        return self._done

    @property
    def events(self) -> tuple[Event, ...]:
        """This episode's grasp and grow events, in step order (what the social partner describes)."""
        return tuple(self._events)

    @property
    def observation(self) -> str:
        return self._obs

    @property
    def admissible_actions(self) -> list[str]:
        return list(self._actions)

    @property
    def admissible_codes(self) -> tuple[int, ...]:
        return self._codes

    @property
    def prompt(self) -> str:
        return render_prompt(self._obs, self._goal_text)

    # ----------------------------------------------------------------------------------- gymnasium API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        """Start an episode: a goal uniform over the pool and a scene where it can be achieved.

        ``options={"goal": text}`` forces the goal, any goal of the grammar (either split; ``ValueError``
        outside it);
        ``options={"scene": ["red cat", ...]}`` forces the scene (distinct objects, any number; whether
        the goal can be achieved there is not checked), for scripted tests and demonstrations.
        """
        super().reset(seed=seed)
        rng = self.np_random
        options = options or {}
        if options.get("goal") is not None:
            goal = parse_goal(str(options["goal"]))
        else:
            goal = self.goal_pool[int(rng.integers(len(self.goal_pool)))]
        if options.get("scene") is not None:
            unknown = [o for o in options["scene"] if o not in OBJECT_BY_NAME]
            if unknown:
                raise ValueError(f"unknown scene objects {unknown}; objects are '{{colour}} {{type}}'")
            objects = tuple(OBJECT_BY_NAME[o] for o in options["scene"])
        else:
            objects = sample_scene(goal, self.config.n_objects, rng)
        self._start(goal, make_scene(objects))
        return self._obs, self._info()

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Take an admissible action text; raises ``ValueError`` for any other text."""
        self._check_running()
        try:
            i = self._actions.index(action)
        except ValueError:
            raise ValueError(
                f"action {action!r} is not admissible here; admissible actions: {list(self._actions)}"
            ) from None
        return self.step_index(i)

    def step_index(self, i: int) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Take the ``i``-th admissible action (index into ``info["admissible_actions"]``)."""
        self._check_running()
        if not 0 <= i < len(self._codes):
            raise ValueError(f"action index {i} out of range: {len(self._codes)} admissible actions")
        held = self._state.held
        state, event = transition(self._scene, self._state, self._codes[i])
        t = self._t
        self._t = t + 1
        self._state = state
        if event is not None:
            kind, idx = event
            self._events.append(Event(t, kind, self._scene.objects[idx]))
            if kind == "grow":
                self._grown_line = "You have grown: " + ", ".join(self._scene.names[j] for j in state.grown)
            self._progress = advance_progress(self._masks, self._progress, event)
        if state.held != held:
            self._codes, self._actions, self._see_line = self._by_held[
                -1 if state.held is None else state.held
            ]
        self._render()
        terminated = self._progress == len(self._masks)
        truncated = not terminated and self._t >= self.config.max_steps
        info = self._info()
        if terminated or truncated:
            self._done = True
            info["success"] = terminated
            info["hindsight"] = hindsight_goals(self._events, self.goal_texts)
        return self._obs, 1.0 if terminated else 0.0, terminated, truncated, info

    # ---------------------------------------------------------------------------------- checkpointing
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly: RNG state and the episode (plain Python values)."""
        out: dict[str, Any] = {"rng": self.np_random.bit_generator.state, "goal": None}
        if self._goal is not None:
            out.update(
                goal=self._goal.text,
                scene=list(self._scene.names),
                state=[self._state.on, self._state.held, list(self._state.grown)],
                t=self._t,
                done=self._done,
                events=[[e.step, e.kind, str(e.obj)] for e in self._events],
            )
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        rng_state = state["rng"]
        bit_generator = getattr(np.random, rng_state["bit_generator"])()
        bit_generator.state = rng_state
        self._np_random = np.random.Generator(bit_generator)
        if state["goal"] is None:
            self._goal, self._done = None, True
            return
        self._start(parse_goal(state["goal"]), make_scene([OBJECT_BY_NAME[n] for n in state["scene"]]))
        on, held, grown = state["state"]
        self._state = State(on, held, tuple(grown))
        self._t = int(state["t"])
        self._done = bool(state["done"])
        self._events = [Event(int(s), k, OBJECT_BY_NAME[o]) for s, k, o in state["events"]]
        for e in self._events:
            idx = self._scene.objects.index(e.obj)
            self._progress = advance_progress(self._masks, self._progress, (e.kind, idx))
        self._codes, self._actions, self._see_line = self._by_held[-1 if held is None else held]
        self._grown_line = "You have grown: " + (", ".join(self._scene.names[j] for j in grown) or NOTHING)
        self._render()

    # -------------------------------------------------------------------------------------- internals
    def _start(self, goal: Goal, scene: Scene) -> None:
        self._goal = goal
        self._goal_text = goal.text
        self._goal_type = goal.goal_type
        self._scene = scene
        self._masks = part_masks(goal, scene)
        self._state = State()
        self._t = 0
        self._progress = 0
        self._events = []
        self._done = False
        n = len(scene)
        names = scene.names
        go_to = [f"Go to {name}" for name in names]
        # Per held object (-1: none): admissible codes, their texts and the "You see" line. Only the
        # held object changes these, so they are built once per episode, not once per step.
        self._by_held = {}
        for h in range(-1, n):
            codes = admissible_codes(n, None if h < 0 else h)
            actions = tuple(go_to[c] if c < n else (GRASP if c == n else RELEASE) for c in codes)
            see = "You see: " + ", ".join(names[i] for i in range(n) if i != h)
            self._by_held[h] = (codes, actions, see)
        self._on_lines = [f"You are on: {name}" for name in names]
        self._holding_lines = [f"You are holding: {name}" for name in names]
        self._codes, self._actions, self._see_line = self._by_held[-1]
        self._grown_line = f"You have grown: {NOTHING}"
        self._render()

    def _render(self) -> None:
        on, held, _ = self._state
        on_line = f"You are on: {NOTHING}" if on is None else self._on_lines[on]
        holding_line = f"You are holding: {NOTHING}" if held is None else self._holding_lines[held]
        self._obs = f"{self._see_line}\n{on_line}\n{holding_line}\n{self._grown_line}"

    def _info(self) -> dict[str, Any]:
        return {
            "goal": self._goal_text,
            "goal_type": self._goal_type,
            "admissible_actions": list(self._actions),
            "prompt": render_prompt(self._obs, self._goal_text),
        }

    def _check_running(self) -> None:
        if self._done:
            if self._goal is None:
                raise RuntimeError("no episode yet: call reset() before step()")
            raise RuntimeError("the episode has ended (terminated or truncated): call reset() before step()")
