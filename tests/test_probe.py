"""The behaviour-cloning probe (sac_glam/analysis/probe.py)."""

import pytest
import torch
from llm_fixtures import SMALL_TINY_MODEL

from sac_glam.analysis.probe import episode_success, expert_states, main
from sac_glam.config import EnvConfig
from sac_glam.envs.expert import shortest_plan
from sac_glam.envs.playground_text import PlaygroundText


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
    assert (
        main(["--steps", "4", "--eval-every", "2", "--batch", "8", "--threads", "1", "--episodes", "5"]) == 0
    )
    lines = capsys.readouterr().out.splitlines()
    table = lines.index("episode success by goal type (5 episodes each):")
    rows = [line.split() for line in lines[2:table]]
    assert [int(r[0]) for r in rows] == [0, 2, 4]
    assert all(0.0 <= float(r[1]) <= 1.0 for r in rows)
    # The learning test's environment samples Grasp goals only: one row per split, train then test.
    typed = [line.split() for line in lines[table + 2 : -2]]
    assert [r[:2] for r in typed] == [["train", "grasp"], ["test", "grasp"]]
    assert all(float(x) in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0) for r in typed for x in r[2:])
    assert [line.split(":")[0] for line in lines[-2:]] == [
        "episode success (argmax)",
        "episode success (sampled)",
    ]
    assert all(float(line.split(":")[1]) in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0) for line in lines[-2:])


def test_episode_success_of_the_expert_is_one_and_of_a_wrong_policy_zero():
    env = PlaygroundText(EnvConfig(n_objects=2, sequential_goals=False, goal_types=["grasp"], max_steps=4))

    def expert(batch):  # all mass on the first action of a shortest plan
        plan = shortest_plan(env.scene, env.masks, env.state, env.progress)
        pi = torch.zeros(len(env.admissible_codes))
        pi[env.admissible_codes.index(plan[0])] = 1.0
        return pi.log()

    def release_only(batch):  # "Release" never grasps anything
        pi = torch.tensor([1.0 if a == "Release" else 0.0 for a in env.admissible_actions])
        return pi.log()

    assert episode_success(env, expert, 30, greedy=True, seed=0) == 1.0
    assert episode_success(env, expert, 30, greedy=False, seed=0) == 1.0
    assert episode_success(env, release_only, 10, greedy=False, seed=0) == 0.0


def test_run_diagnosis_reads_a_trained_run(tmp_path, capsys):
    from sac_glam.run.configs import load_config
    from sac_glam.run.train import train

    overrides = ["env.n_envs=4", "env.n_objects=2", "env.max_steps=4", "env.goal_types=[grasp]",
                 *SMALL_TINY_MODEL, "critic.width=32",
                 "train.eval_every=0", "train.eval_episodes=4", "train.progress=false", "train.tensorboard=false",
                 "train.threads=1", "sac.batch_size=8", "sac.learning_starts=16", "sac.update_every=8",
                 "sac.n_updates=1", "train.total_steps=48", "train.checkpoint_every=1", f"train.run_dir={tmp_path}"]  # fmt: skip
    train(load_config("sac_glam_her_cpu", overrides))
    capsys.readouterr()
    assert main(["--run", str(tmp_path), "--states", "40", "--threads", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "at step 48 (sac), 40 expert-labelled states" in out[0]
    actor, critic, agree, actor_opt, critic_opt, mass, chance = (
        float(line.split(":")[1]) for line in out[1:8]
    )
    assert all(0.0 <= x <= 1.0 for x in (actor, critic, agree, actor_opt, critic_opt, mass))
    assert 1 / 4 <= chance < 1.0  # one optimal action or more among at most 4 (N = 2), not all of them
    assert agree >= actor + critic - 1 - 1e-9  # where both match the expert, they match each other
    assert actor_opt >= actor and critic_opt >= critic  # the expert's action is one of the optimal ones
    # by stratum: one line per (goal type, parts done); the counts add up and the shares average back
    strata = [line.split() for line in out[9:]]
    assert out[8].strip().startswith("by goal type and parts achieved") and strata
    assert all(st[0] == "grasp" and st[3] == "0:" for st in strata)  # Grasp goals end at their one part
    assert sum(int(st[4][2:]) for st in strata) == 40
    assert sum(int(st[4][2:]) * float(st[5]) for st in strata) / 40 == pytest.approx(actor, abs=0.01)
    # --run-episodes: the actor's episode success, one row per split and goal type the run samples
    assert main(["--run", str(tmp_path), "--states", "40", "--threads", "1", "--run-episodes", "6"]) == 0
    out = capsys.readouterr().out.splitlines()
    head = out.index("episode success by goal type (6 episodes each):")
    rows = [line.split() for line in out[head + 2 :]]
    assert [r[:2] for r in rows] == [["train", "grasp"], ["test", "grasp"]]
    assert all(float(x) * 6 == pytest.approx(round(float(x) * 6), abs=0.02) for r in rows for x in r[2:])
    with pytest.raises(SystemExit):
        main(["--run", str(tmp_path), "--run-episodes", "-1"])
    with pytest.raises(SystemExit):
        main(["--run", str(tmp_path), "sac.gamma=0.5"])
    with pytest.raises(SystemExit, match="not a run directory"):
        main(["--run", str(tmp_path / "missing")])


def test_sampled_types_follow_the_environment_config():
    from sac_glam.analysis.probe import sampled_types

    assert sampled_types([], True) == ["grasp", "grow", "grow_then_grasp", "grow_then_grow"]
    assert sampled_types([], False) == ["grasp", "grow"]
    assert sampled_types(["grow_then_grow", "grasp"], True) == ["grasp", "grow_then_grow"]


def test_labelled_states_name_the_goal_type_and_parts_done():
    from sac_glam.analysis.probe import labelled_states

    env = PlaygroundText(EnvConfig(goal_types=["grow_then_grasp", "grow_then_grow"]), split="train")
    labelled = labelled_states(env, 300, seed=0, expert_share=0.5)
    assert [s.example for s in labelled] == expert_states(env, 300, seed=0, expert_share=0.5)
    assert {s.stratum[0] for s in labelled} == {"grow_then_grasp", "grow_then_grow"}
    assert {s.stratum[1] for s in labelled} == {0, 1}  # before and after the first part, never after the goal
    assert all(s.steps is None for s in labelled)  # searched only when asked for


def test_action_steps_name_the_optimal_actions_and_q_star():
    """Every action's distance to the goal: the expert's action is among the optimal ones, whose distance
    is the shortest plan's length; ties are frequent with six objects; Q* = gamma^(steps - 1)."""
    from sac_glam.analysis.probe import labelled_states

    env = PlaygroundText(EnvConfig(goal_types=["grow_then_grasp"]), split="train")
    labelled = labelled_states(env, 200, seed=0, expert_share=0.5, steps=True)
    ties = 0
    for s in labelled:
        _, actions, label = s.example
        assert s.steps is not None and len(s.steps) == len(actions)
        optimal = s.optimal()
        assert optimal[label]  # the expert's first action starts a shortest plan
        best = s.steps[label]
        assert best is not None and all(k is None or k >= best for k in s.steps)
        assert s.q_star(0.5) == [0.0 if k is None else 0.5 ** (k - 1) for k in s.steps]
        ties += sum(optimal) > 1
    assert ties > 20  # the expert's one label undercounts what is right


def test_critic_probe_regresses_q_star(capsys):
    """--critic: held-out rows every --eval-every steps; the MSE to Q* falls with perfect targets."""
    args = ["--steps", "40", "--eval-every", "20", "--batch", "32", "--threads", "1", "--data", "600"]
    for targets in ("all", "taken"):
        assert main([*args, "--critic", targets, "--lr", "3e-3"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].startswith(f"critic regression on Q* ({targets} actions)")
        rows = [line.split() for line in lines[2:]]
        assert [int(r[0]) for r in rows] == [0, 20, 40]
        assert all(0.0 <= float(r[1]) <= 1.0 for r in rows)
        assert float(rows[-1][2]) < float(rows[0][2])


def test_expert_share_reaches_the_states_after_a_sequential_goals_first_part(monkeypatch):
    """A random policy seldom achieves a sequential goal's first part (8% of its states, seed 0); following
    the expert half the time gets there in over a third, so the second part's states get labelled too."""
    from sac_glam.analysis import probe

    env = PlaygroundText(EnvConfig(goal_types=["grow_then_grasp", "grow_then_grow"]), split="train")

    def first_part_done_share(expert_share):
        progress = []

        def recording(scene, masks, state, done_parts=0):
            progress.append(done_parts)
            return shortest_plan(scene, masks, state, done_parts)

        monkeypatch.setattr(probe, "shortest_plan", recording)
        states = expert_states(env, 600, seed=0, expert_share=expert_share)
        assert len(states) == 600 and all(0 <= y < len(a) for _, a, y in states)
        return sum(p >= 1 for p in progress) / len(progress)

    assert first_part_done_share(0.5) > 3 * first_part_done_share(0.0)
