"""A scripted expert: breadth-first search over the episode's small state space.

The search steps through :func:`~sac_glam.envs.rules.transition` and
:func:`~sac_glam.envs.rules.advance_progress`, the environment's own dynamics, so the expert
cannot drift from the rules. A search node is (on, held, grown set, goal progress): with N = 6 there
are at most 7 x 7 x 2^6 x 3 nodes, and the goal is at most 7 steps away, so a search takes about a
millisecond. Ties between shortest plans are broken by admissible-action order (deterministic).
"""

from __future__ import annotations

from sac_glam.envs.playground_text import PlaygroundText
from sac_glam.envs.rules import PartMasks, Scene, State, admissible_codes, advance_progress, transition

_Node = tuple[int | None, int | None, frozenset[int], int]


def shortest_plan(scene: Scene, masks: PartMasks, state: State, progress: int = 0) -> list[int]:
    """Action codes of a shortest action sequence achieving the goal from ``state`` (``[]`` if achieved).

    Raises ``RuntimeError`` when the goal cannot be achieved from ``state`` (never for a sampled scene).
    """
    goal_progress = len(masks)
    if progress == goal_progress:
        return []
    n = len(scene)
    start: _Node = (state.on, state.held, frozenset(state.grown), progress)
    parent: dict[_Node, tuple[_Node, int] | None] = {start: None}
    frontier = [(state, progress, start)]
    while frontier:
        next_frontier = []
        for s, p, node in frontier:
            for code in admissible_codes(n, s.held):
                s2, event = transition(scene, s, code)
                p2 = advance_progress(masks, p, event)
                # The order in which objects grew never changes the dynamics, only the text.
                node2: _Node = (s2.on, s2.held, frozenset(s2.grown), p2)
                if node2 in parent:
                    continue
                parent[node2] = (node, code)
                if p2 == goal_progress:
                    plan = []
                    cur: _Node = node2
                    while (link := parent[cur]) is not None:
                        cur, c = link
                        plan.append(c)
                    return plan[::-1]
                next_frontier.append((s2, p2, node2))
        frontier = next_frontier
    raise RuntimeError(f"goal unreachable from state {state} in scene {list(scene.names)}")


def action_steps(scene: Scene, masks: PartMasks, state: State, progress: int = 0) -> list[int | None]:
    """For each admissible action of ``state`` (admissible order), the fewest steps to the goal when that
    action comes first: 1 if it achieves the goal, else 1 + a shortest plan from where it leads; ``None``
    where the goal becomes unreachable (an object the second part needs grew too early).

    The optimal actions are those with the minimum (ties included: with six objects several first
    actions often start equally short plans, where :func:`shortest_plan` names one). With reward 1 at the
    achieving step, Q*(s, a) = gamma^(steps - 1): e.g. steps (1, 3, None) -> Q* (1, gamma^2, 0).
    """
    goal_progress = len(masks)
    out: list[int | None] = []
    for code in admissible_codes(len(scene), state.held):
        s2, event = transition(scene, state, code)
        p2 = advance_progress(masks, progress, event)
        try:
            out.append(1 if p2 == goal_progress else 1 + len(shortest_plan(scene, masks, s2, p2)))
        except RuntimeError:
            out.append(None)
    return out


def expert_plan(env: PlaygroundText) -> list[str]:
    """The action texts of a shortest plan from the environment's current state."""
    n = len(env.scene)
    codes = shortest_plan(env.scene, env.masks, env.state, env.progress)
    return [f"Go to {env.scene.names[c]}" if c < n else ("Grasp" if c == n else "Release") for c in codes]


def expert_action(env: PlaygroundText) -> str:
    """An admissible action on a shortest path to the goal from the environment's current state."""
    if env.done:
        raise RuntimeError("the episode has ended: call reset() before asking the expert")
    codes = shortest_plan(env.scene, env.masks, env.state, env.progress)
    return env.admissible_actions[env.admissible_codes.index(codes[0])]


def expert_episode_length(env: PlaygroundText) -> int:
    """Steps a shortest plan needs from the environment's current state (the BFS optimum)."""
    return len(shortest_plan(env.scene, env.masks, env.state, env.progress))
