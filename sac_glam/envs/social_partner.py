"""The social partner: which goals did a trajectory achieve, and when (``docs/environment.md``).

At the end of an episode the partner describes every goal of a goal set that the trajectory achieved,
with the *first* step at which it was achieved. HER relabels the prefix up to that step with that goal
(:mod:`sac_glam.buffers.her`).

Candidates come from the events, never from the goal set: a grasp or grow event of ``red cat`` matches
at most seven simple goals (``Grasp red cat``, ``Grasp any cat``, ``Grasp red animal``, ``Grasp any
animal``, ``Grasp red living_thing``, ``Grasp any living_thing``, ``Grasp any red thing``), and a
sequential goal ``{A} then {b}`` can only be achieved when both its parts are. An episode's cost is
thus (grow-goal candidates) x (simple candidates) string look-ups, not 8,470 goal checks.
"""

from __future__ import annotations

import functools
from bisect import bisect_left
from collections.abc import Collection, Sequence
from typing import NamedTuple

from sac_glam.envs.goals import ANY, Obj, Verb


class Event(NamedTuple):
    """Something the partner can describe: at transition ``step`` (0-based) the agent grasped or grew ``obj``."""

    step: int
    kind: Verb
    obj: Obj


@functools.cache
def simple_goal_texts(kind: Verb, obj: Obj) -> tuple[str, ...]:
    """Every simple goal text, in every form, that a ``kind`` event of ``obj`` achieves.

    Forms: ``{Verb} {colour|any} {type|category|living_thing}`` and ``{Verb} any {colour} thing``. Texts
    outside the grammar (``Grow red living_thing`` for a chair) are never produced for living things and
    are filtered by the goal set anyway.
    """
    if kind == "grow" and not obj.living:
        return ()
    verb = kind.capitalize()
    names = [obj.type, obj.category] + (["living_thing"] if obj.living else [])
    texts = [f"{verb} {colour} {name}" for colour in (obj.colour, ANY) for name in names]
    texts.append(f"{verb} any {obj.colour} thing")
    return tuple(texts)


def hindsight_goals(events: Sequence[Event], goal_set: Collection[str]) -> dict[str, int]:
    """Every goal of ``goal_set`` achieved by a trajectory's ``events``, with the first step achieving it.

    ``events`` must be in step order (as the environment records them). A sequential goal
    ``{A} then {b}`` is achieved at the first ``b`` event at or after A's first step; both parts may be
    achieved by the same grow event (``Grow any animal then grow red cat`` by growing the red cat).
    Simple goals come first in the returned dict, then sequential ones, each in event order.
    """
    steps: dict[str, list[int]] = {}  # simple goal text -> ascending steps of its events
    for event in events:
        for text in simple_goal_texts(event.kind, event.obj):
            seen = steps.get(text)
            if seen is None:
                steps[text] = [event.step]
            elif seen[-1] != event.step:
                seen.append(event.step)
    out = {text: seen[0] for text, seen in steps.items() if text in goal_set}
    # Second parts are written with a lower-case first letter ("... then grasp red cat").
    lowered = [(f"g{text[1:]}", seen) for text, seen in steps.items()]
    for first, first_steps in steps.items():
        if not first.startswith("Grow "):
            continue
        t1 = first_steps[0]
        prefix = f"{first} then "
        for second, second_steps in lowered:
            if second_steps[-1] < t1:
                continue
            text = prefix + second
            if text in goal_set:
                out[text] = second_steps[bisect_left(second_steps, t1)]
    return out
