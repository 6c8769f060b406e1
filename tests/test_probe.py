"""The behaviour-cloning probe (sac_glam/probe.py)."""

from sac_glam.config import EnvConfig
from sac_glam.envs.playground_text import PlaygroundText
from sac_glam.probe import expert_states, main


def _line(prompt: str, head: str) -> str:
    return next(line for line in prompt.split("\n") if line.startswith(head)).removeprefix(head).strip()


def test_expert_labels_grasp_goals_correctly():
    """Grasp goals naming one object: on it with empty hands -> Grasp; elsewhere with empty hands -> Go to it."""
    env = PlaygroundText(EnvConfig(n_objects=2, sequential_goals=False, goal_types=["grasp"]), split="train")
    states = expert_states(env, 300, seed=0)
    assert len(states) == 300
    checked = 0
    for prompt, actions, label in states:
        target = _line(prompt, "Goal:").removeprefix("Grasp ")
        if (
            target not in _line(prompt, "You see:").split(", ")
            or _line(prompt, "You are holding:") != "nothing"
        ):
            continue  # a category goal ("any animal") or a full hand: several right answers
        on = _line(prompt, "You are on:")
        assert actions[label] == ("Grasp" if on == target else f"Go to {target}"), prompt
        checked += 1
    assert checked > 50


def test_probe_prints_accuracy_rows(capsys):
    assert main(["--steps", "4", "--eval-every", "2", "--batch", "8", "--threads", "1"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [int(r[0]) for r in rows] == [0, 2, 4]
    assert all(0.0 <= float(r[1]) <= 1.0 for r in rows)
