"""The decisive-state probes of ``sac-glam bench heldout`` (``docs/heldout.md``).

Hand-built states, scored in one batch each. :func:`supply_choice` holds the living thing a Grow goal
names: does the agent take it to the water, to the food, or release it? :func:`release_wrong_plant` is
the control, holding a plant that a train goal does *not* name, where releasing it is right.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from sac_glam.envs.goals import ALL_OBJECTS, Obj, goals
from sac_glam.envs.playground_text import PlaygroundText

SplitName = Literal["train", "test"]


PROBE_ACTIONS: tuple[str, ...] = ("water", "food", "release", "grasp")
#: Probe states per (goal, kind of living thing): up to this many of the objects the goal names.
PROBE_PER_GOAL = 5


def supply_choice(policy: Any, q_agent: Any, env_cfg: Any, split: SplitName, seed: int) -> dict[str, Any]:
    """Holding the living thing a grow goal names, in a scene {it, water, food}: what pi and Q choose.

    One state per (grow goal of the split, kind, object of that kind the goal names; at most
    :data:`PROBE_PER_GOAL` of them), with random supply colours and scene order. The four admissible actions there are ``Go to`` the water, ``Go to`` the food, ``Release`` and
    ``Grasp`` (a no-op with full hands). ``plant`` rows are the decisive state of a Grow-a-plant goal
    (only the water grows it); ``animal`` rows are the control (either supply grows it). Per kind:
    ``pi``, the mean mass on each action; ``argmax_q``, the share of states where min_k Q is highest
    for it (absent without a critic).
    """
    rng = np.random.default_rng(seed)
    env = PlaygroundText(env_cfg, split)
    prompts: list[str] = []
    actions: list[list[str]] = []
    rows: list[tuple[str, list[int]]] = []  # (kind, indices of PROBE_ACTIONS in the admissible list)
    for goal in goals(split, sequential=False):
        part = goal.first
        for kind in ("plant", "animal") if part.verb == "grow" else ():
            names = [o for o in ALL_OBJECTS if o.category == kind and part.matches(o)]
            for k in rng.permutation(len(names))[:PROBE_PER_GOAL]:  # train goals name few plants: several
                living = names[int(k)]
                water, food = (Obj(str(rng.choice(["red", "blue", "green"])), t) for t in ("water", "food"))
                scene = [str(o) for o in (living, water, food)]
                env.reset(options={"goal": goal.text, "scene": [scene[i] for i in rng.permutation(3)]})
                env.step(f"Go to {living}")
                env.step("Grasp")
                acts = env.admissible_actions
                prompts.append(env.prompt)
                actions.append(acts)
                wanted = (f"Go to {water}", f"Go to {food}", "Release", "Grasp")
                rows.append((kind, [acts.index(a) for a in wanted]))
    if not rows:
        return {}
    pi_BA = policy.act(prompts, actions).log_pi_BA.exp()
    q_BA = None
    if q_agent is not None:
        with torch.no_grad():
            out_q = q_agent.evaluate(prompts, actions, q=True)
        q_BA = out_q.q_KBA.min(0).values.masked_fill(~out_q.mask_BA, -torch.inf)
    out: dict[str, Any] = {}
    for kind in ("plant", "animal"):
        idx = [b for b, r in enumerate(rows) if r[0] == kind]
        if not idx:
            continue
        cols_B4 = torch.tensor([rows[b][1] for b in idx])
        b_B1 = torch.tensor(idx).view(-1, 1)
        pi_B4 = pi_BA[b_B1, cols_B4]
        out[kind] = {"states": len(idx), "pi": dict(zip(PROBE_ACTIONS, pi_B4.mean(0).tolist(), strict=True))}
        if q_BA is not None:  # the four are all the admissible actions: argmax over them is Q's choice
            best_B = q_BA[b_B1, cols_B4].argmax(-1)
            shares = torch.bincount(best_B, minlength=4).float() / len(idx)
            out[kind]["argmax_q"] = dict(zip(PROBE_ACTIONS, shares.tolist(), strict=True))
    return out


def release_wrong_plant(policy: Any, q_agent: Any, env_cfg: Any, seed: int) -> dict[str, Any]:
    """Holding a plant a (simple) train goal does not name: pi's mean mass on ``Release``, and the share
    of states where argmax min_k Q is ``Release`` (None without a critic).

    One state per train goal that some plant fails: scene {that plant, an object the goal names, a water},
    the plant grasped. Releasing it is the way on in every such state (a Grasp goal names another object;
    a Grow goal's water would grow the wrong plant), so training teaches ``Release`` here; the test-goal
    rows of :func:`supply_choice` show where that rule has spread.
    """
    rng = np.random.default_rng(seed)
    env = PlaygroundText(env_cfg, "train")
    plants = [o for o in ALL_OBJECTS if o.category == "plant"]
    prompts: list[str] = []
    actions: list[list[str]] = []
    for goal in goals("train", sequential=False):
        named = [o for o in ALL_OBJECTS if goal.first.matches(o)]
        others = [p for p in plants if not goal.first.matches(p)]
        if not named or not others:
            continue
        target, plant = named[int(rng.integers(len(named)))], others[int(rng.integers(len(others)))]
        water = next(o for o in ALL_OBJECTS if o.type == "water" and o not in (target, plant))
        scene = [str(o) for o in (plant, target, water)]
        env.reset(options={"goal": goal.text, "scene": [scene[i] for i in rng.permutation(3)]})
        env.step(f"Go to {plant}")
        env.step("Grasp")
        prompts.append(env.prompt)
        actions.append(env.admissible_actions)
    release_B = torch.tensor([a.index("Release") for a in actions])
    b_B = torch.arange(len(actions))
    pi_BA = policy.act(prompts, actions).log_pi_BA.exp()
    out: dict[str, Any] = {
        "states": len(actions),
        "pi": float(pi_BA[b_B, release_B].mean()),
        "argmax_q": None,
    }
    if q_agent is not None:
        with torch.no_grad():
            ev = q_agent.evaluate(prompts, actions, q=True)
        q_BA = ev.q_KBA.min(0).values.masked_fill(~ev.mask_BA, -torch.inf)
        out["argmax_q"] = float((q_BA.argmax(-1) == release_B).float().mean())
    return out
