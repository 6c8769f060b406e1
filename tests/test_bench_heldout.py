"""``sac-glam bench heldout``: the failure classifier on hand-built trajectories, and the bench end to end."""

import json

import numpy as np
import pytest
import torch
from llm_fixtures import SMALL_TINY_MODEL
from test_evaluation import ByPrompt, EndsByEnv

from sac_glam.backends.base import ActOutput
from sac_glam.benchmarks.heldout import (
    CAUSES,
    SUCCESS,
    classify,
    diagnose,
    goal_category,
    has_decoy,
    main,
    reworded_success,
    rollout,
    train_wording,
    transitions,
)
from sac_glam.envs.goals import goals, is_test_text, parse_goal
from sac_glam.envs.playground_text import OBJECT_BY_NAME, PlaygroundText, make_scene, sample_scene
from sac_glam.run.configs import load_config
from sac_glam.run.evaluation import play_episodes
from sac_glam.run.train import evaluate, train


def _scene(*names):
    return make_scene([OBJECT_BY_NAME[n] for n in names])


# Scene [red tree, blue food, green water]: codes 0-2 Go to, 3 Grasp, 4 Release (with nothing held).
@pytest.mark.parametrize("codes,expected", [
    ([1, 3, 0], "wrong_supply"),   # food to the tree: plants only grow with water
    ([0, 3, 1], "wrong_supply"),   # the tree carried to the food
    ([2, 3, 0], SUCCESS),          # water to the tree
    ([0, 3, 2], SUCCESS),          # the tree carried to the water
    ([2, 3, 1, 1], "no_combine"),  # held the water, never took it to the tree
    ([0, 1, 2, 1], "no_grasp"),    # walked around
    ([1, 3, 2, 2], "grasped_wrong"),  # held the food (useless for a plant), never took it to the tree
    ([1, 3, 2, 0], "wrong_supply"),   # ... and then took it to the tree
])  # fmt: skip
def test_grow_plant_failures_are_classified_by_cause(codes, expected):
    scene = _scene("red tree", "blue food", "green water")
    assert classify(parse_goal("Grow red tree"), scene, codes).cause == expected


def test_growing_the_wrong_object_and_grasp_goal_failures():
    food_first = _scene("red tree", "blue food", "green water")
    assert classify(parse_goal("Grow red tree"), food_first, [1, 3, 0]) == ("wrong_supply", 1)  # the food
    scene = _scene("red tree", "green water", "blue cat")
    assert classify(parse_goal("Grow red tree"), scene, [1, 3, 2]) == ("grew_wrong", 2)  # watered the cat
    scene = _scene("red cactus", "blue chair", "red food")
    grasp = parse_goal("Grasp red cactus")
    assert classify(grasp, scene, [1, 3, 4]).cause == "grasped_wrong"  # grasped the chair
    assert classify(grasp, scene, [0, 1, 2]).cause == "reached_no_grasp"  # stood on the cactus, walked on
    assert classify(grasp, scene, [1, 2, 1]).cause == "no_grasp"
    assert classify(grasp, scene, [1, 0, 3]).cause == SUCCESS


@pytest.mark.parametrize("split,sequential,n_objects", [("test", False, 3), ("train", True, 5)])
def test_classify_agrees_with_the_environment_on_random_trajectories(split, sequential, n_objects):
    env_cfg = load_config(
        "sac_glam_her_cpu", [f"env.n_objects={n_objects}", f"env.sequential_goals={sequential}"]
    )
    env = PlaygroundText(env_cfg.env, split)
    rng = np.random.default_rng(0)
    pool = goals(split, sequential=sequential)
    seen = set()
    for _ in range(400):
        goal = pool[int(rng.integers(len(pool)))]
        objects = sample_scene(goal, n_objects, rng)
        env.reset(options={"goal": goal.text, "scene": [str(o) for o in objects]})
        codes, success = [], False
        while not env.done:
            i = int(rng.integers(len(env.admissible_codes)))
            codes.append(env.admissible_codes[i])
            success = env.step_index(i)[1] == 1.0
        outcome = classify(goal, env.scene, codes).cause
        assert (outcome == SUCCESS) == success, (goal.text, [str(o) for o in objects], codes)
        assert outcome == SUCCESS or outcome in CAUSES
        seen.add(outcome)
    assert {SUCCESS, "grew_wrong", "no_combine", "no_grasp", "grasped_wrong"} <= seen


def test_a_decoy_is_a_living_thing_the_grow_goal_does_not_name():
    goal = parse_goal("Grow red tree")
    assert has_decoy(goal, _scene("red tree", "green water", "blue cat"))
    assert has_decoy(goal, _scene("red tree", "green water", "blue tree"))
    assert not has_decoy(goal, _scene("red tree", "green water", "blue chair"))


def test_train_wording_names_the_same_objects_or_nothing():
    tree = parse_goal("Grow red tree")
    assert train_wording(tree, _scene("red tree", "green water", "blue cat")) == "Grow any red thing"
    assert train_wording(tree, _scene("red tree", "green water", "red cat")) is None  # red cat grows too
    assert train_wording(tree, _scene("red tree", "green water", "red chair")) == "Grow any red thing"
    door = parse_goal("Grasp blue door")
    assert train_wording(door, _scene("blue door", "red chair", "green cat")) == "Grasp any blue thing"
    assert train_wording(door, _scene("blue door", "blue water", "green cat")) is None
    assert train_wording(parse_goal("Grow any tree"), _scene("green tree", "red water", "green chair")) == (
        "Grow any green thing"
    )
    assert (
        train_wording(parse_goal("Grow any red thing"), _scene("red tree", "green water", "blue cat")) is None
    )


class _Uniform:
    """A policy stand-in: uniform over the admissible actions; records what it read."""

    def __init__(self):
        self.prompts = []

    def act(self, prompts, actions):
        self.prompts += prompts
        mask_BA = torch.tensor([[j < len(a) for j in range(5)] for a in actions])
        log_pi_BA = torch.log(mask_BA / mask_BA.sum(-1, keepdim=True)).masked_fill(~mask_BA, 0.0)
        return ActOutput(log_pi_BA, mask_BA, None)


def test_reworded_rollout_shows_the_train_wording_on_the_same_episodes():
    env_cfg = load_config("sac_glam_her_cpu", ["env.n_envs=4"]).env
    plain, policy = rollout(_Uniform(), env_cfg, "test", 16, 3, greedy=False), _Uniform()
    reworded = rollout(policy, env_cfg, "test", 16, 3, greedy=False, reword=True)
    assert [(e.goal, e.scene) for e in plain] == [(e.goal, e.scene) for e in reworded]
    changed = [e for e in reworded if e.shown != e.goal.text]
    assert changed and all(not is_test_text(e.shown) for e in changed)
    read = {line.removeprefix("Goal: ") for p in policy.prompts for line in p.splitlines()[:1]}
    assert {e.shown for e in changed} <= read
    cells = reworded_success(plain, reworded)
    assert sum(n for n, _, _ in cells.values()) == len(changed)


def test_rollout_records_the_episodes_the_loops_evaluation_plays():
    """Episode by episode: the policy reads the environment's own prompt (its pi depends on the text),
    and each episode gets its own goal, actions and success."""
    env_cfg = load_config("sac_glam_her_cpu", ["env.n_envs=4"]).env
    hook = EndsByEnv()
    play_episodes(ByPrompt(), env_cfg, "test", 10, 3, greedy=False, hook=hook)
    eps = rollout(ByPrompt(), env_cfg, "test", 10, 3, greedy=False)
    ends = [end for env_ends in hook.ends for end, counted in env_ends if counted]
    assert len(eps) == len(ends) == 12  # a quota of 3 per env
    assert [(e.goal.text, e.success, len(e.codes)) for e in eps] == [
        (e.goal, e.success, e.length) for e in ends
    ]
    assert 0 < sum(e.success for e in eps) < len(eps)
    assert all((classify(e.goal, e.scene, e.codes).cause == SUCCESS) == e.success for e in eps)


def test_goal_categories():
    assert goal_category(parse_goal("Grow red tree")) == "grow/plant"
    assert goal_category(parse_goal("Grow any plant")) == "grow/plant"
    assert goal_category(parse_goal("Grow green dog")) == "grow/animal"
    assert goal_category(parse_goal("Grow red living_thing")) == "grow/generic"
    assert goal_category(parse_goal("Grow any red thing")) == "grow/generic"
    assert goal_category(parse_goal("Grasp any fly")) == "grasp"


TINY = [
    "env.n_envs=4", "env.max_steps=6", *SMALL_TINY_MODEL, "critic.width=32", "train.eval_every=0", "train.eval_episodes=8", "train.progress=false",
    "train.tensorboard=false", "train.threads=1", "sac.batch_size=8", "sac.learning_starts=16",
    "sac.update_every=8", "sac.n_updates=1", "sac.chunk_size=4", "buffer.capacity=200", "train.total_steps=24",
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A SAC-GLAM+HER run of the CPU default's environment (N = 3, Grasp and Grow), one gradient step."""
    run = tmp_path_factory.mktemp("heldout") / "run"
    train(load_config("sac_glam_her_cpu", [*TINY, f"train.run_dir={run}"]))
    return run


def test_bench_partitions_the_episodes_and_matches_the_loops_evaluation(tiny_run):
    from sac_glam.benchmarks.actor_critic import load_run

    r = diagnose(tiny_run, "test", 12, None, "pi")
    assert r["episodes"] == 12 and r["step"] == 24 and r["seed"] == 10_000
    rows = r["outcomes"]
    categories = {k: v for k, v in rows.items() if k != "all"}
    assert set(categories) <= {"grasp", "grow/plant", "grow/animal", "grow/generic"}
    assert sum(sum(row.values()) for row in categories.values()) == 12
    for outcome in rows["all"]:
        assert rows["all"][outcome] == sum(row[outcome] for row in categories.values())
    for cause in ("wrong_supply", "grew_wrong", "no_combine", "grasped_wrong"):  # these name an object
        assert sum(r["objects"].get(cause, {}).values()) == rows["all"][cause]
    for cat, cell in r["decoys"].items():  # split by decoy or not: the category's episodes and successes
        assert sum(n for n, _ in cell.values()) == sum(rows[cat].values())
        assert sum(k for _, k in cell.values()) == rows[cat][SUCCESS]
    for cat, (n, own, _) in r["reworded"].items():
        assert n <= sum(rows[cat].values()) and own <= rows[cat][SUCCESS]
    # The same episodes, seeds and sampling as the loop's evaluation: the same success rate.
    cfg, _, backend = load_run(tiny_run, "test")
    cfg.train.eval_episodes = 12
    assert r["success"] == pytest.approx(evaluate(backend, cfg, "test", 10_000)["success_rate"])
    plant = r["supply"]["plant"]  # the four actions are all there is, holding the plant
    assert plant["states"] > 0 and sum(plant["pi"].values()) == pytest.approx(1.0, abs=1e-5)
    assert sum(plant["argmax_q"].values()) == pytest.approx(1.0)
    wrong = r["wrong_plant"]  # one state per train goal that some plant does not satisfy
    assert wrong["states"] > 100 and 0.0 < wrong["pi"] < 1.0 and 0.0 <= wrong["argmax_q"] <= 1.0


def test_transitions_pair_the_same_episodes(tiny_run):
    a = diagnose(tiny_run, "test", 8, None, "pi")
    moved = transitions(a, diagnose(tiny_run, "test", 8, None, "pi"))  # same checkpoint: the diagonal
    assert moved == {k: {j: a["outcomes"]["all"][k] * (j == k) for j in row} for k, row in moved.items()}
    assert transitions(a, diagnose(tiny_run, "test", 8, 1, "pi")) is None  # other seed, other episodes


def test_bench_reads_a_ppo_run_without_q_columns(tmp_path):
    ppo = ["env.n_envs=4", "env.max_steps=6", *SMALL_TINY_MODEL, "train.eval_every=0", "train.eval_episodes=8", "train.progress=false",
           "train.tensorboard=false", "train.threads=1", "ppo.n_steps=16", "ppo.epochs=1", "ppo.batch_size=16",
           "ppo.chunk_size=8", "train.total_steps=16", f"train.run_dir={tmp_path}"]  # fmt: skip
    train(load_config("ppo_glam_cpu", ppo))
    r = diagnose(tmp_path, "test", 8, None, "pi")
    assert (
        r["episodes"] == 8 and "argmax_q" not in r["supply"]["plant"] and r["wrong_plant"]["argmax_q"] is None
    )
    with pytest.raises(SystemExit, match="needs a SAC run"):
        diagnose(tmp_path, "test", 8, None, "argmax_q")


def test_cli_writes_json_and_refuses_a_directory_without_a_run(tiny_run, tmp_path, capsys):
    out = tmp_path / "r.json"
    main([str(tiny_run), "--episodes", "4", "--split", "train", "--policy", "argmax_q", "--json", str(out)])
    [r] = json.loads(out.read_text())
    assert r["split"] == "train" and r["policy"] == "argmax_q" and r["episodes"] == 4
    assert "grow/plant" not in r["outcomes"]  # no train goal names a plant
    assert "success" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="not a run directory"):
        main([str(tmp_path), "--episodes", "4"])
