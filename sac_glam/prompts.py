"""The prompt the LLM reads: goal, scene, then ``Action:`` (paper Figure 3).

One function renders it, both when acting and when HER relabels a stored transition with another goal,
so a relabelled prompt is byte-for-byte the prompt the agent would have seen pursuing that goal.
"""

from __future__ import annotations


def render_prompt(observation: str, goal: str) -> str:
    """The LLM prompt for a scene ``observation`` and a ``goal`` text.

    Format (one item per line, no trailing newline; the goal is stored apart from the observation so
    that HER can swap it)::

        Goal: Grow green mouse then grow blue rose
        You see: green water, green mouse, blue rose, red rose, blue lion, red food
        You are on: nothing
        You are holding: nothing
        You have grown: nothing
        Action:

    ``observation`` is the environment's four-line scene text (``You see`` ... ``You have grown``).
    """
    return f"Goal: {goal}\n{observation}\nAction:"
