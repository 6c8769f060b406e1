"""``sac-glam bench heldout RUN_DIR...``: where, and why, a run fails on held-out (test) goals.

Loads each run's newest checkpoint (or a checkpoint file copied out of a run, such as
``RUN_DIR/snapshots/step12288.pt``) and plays ``--episodes`` episodes of ``--split`` through the training
loop's evaluation (``play_episodes`` in sac_glam/run/evaluation.py: the same environments, seeds, sampling).
With the default ``--seed`` (the loop's, ``train.seed + 10000``) and ``--policy pi``, the success is the
run's logged ``eval/{split}/success_rate`` at that step. It reports:

- success by goal category (:func:`goal_category`) and the cause of each failure (:func:`classify`, from
  the actions replayed through the environment's ``transition``), with the kind of object involved and
  the Grow success with and without a living decoy;
- on the test split, the same episodes with the policy reading ``{Verb} any {colour} thing`` (a train
  goal) wherever it names the same objects (:func:`train_wording`);
- the decisive state of a Grow goal (``heldout_probes.supply_choice``): holding the living thing it names,
  next to water and food, what pi and argmax Q choose. Plants grow only with water
  (``docs/environment.md``). As a control, ``Release`` holding a plant a train goal does not name;
- with several checkpoints of one run, outcome transitions on the same episodes (:func:`transitions`).

``docs/heldout.md`` reads these numbers for the CPU default's runs.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch

from sac_glam.config import EnvConfig
from sac_glam.envs.goals import CATEGORY_TYPES, THING, Goal, SimpleGoal
from sac_glam.envs.playground_text import PlaygroundText
from sac_glam.envs.rules import Scene, State, advance_progress, part_masks, transition
from sac_glam.envs.vector import EpisodeEnd, PlaygroundTextVecEnv, VecObs
from sac_glam.helptext import plain
from sac_glam.prompts import render_prompt
from sac_glam.run.evaluation import EpisodeHook, Policy, play_episodes

PROG = "sac-glam bench heldout"
SplitName = Literal["train", "test"]
SUCCESS = "success"
#: Failure causes, in the order they are tested (the first that applies is the episode's cause).
CAUSES: dict[str, str] = {
    "wrong_supply": "brought a goal object and a supply that cannot grow it together (food to a plant)",
    "grew_wrong": "grew an object the goal does not name",
    "no_combine": "grasped the goal object or a supply that grows it, never brought the pair together",
    "grasped_wrong": "grasped only objects that serve neither the goal nor its supply",
    "reached_no_grasp": "stood on an object the Grasp goal names, never grasped it",
    "no_grasp": "never grasped anything: went from object to object until the step limit",
}
OUTCOMES: tuple[str, ...] = (SUCCESS, *CAUSES)
GROW_KINDS: dict[str, str] = {t: c for c in ("plant", "animal") for t in (*CATEGORY_TYPES[c], c)}


def goal_category(goal: Goal) -> str:
    """``grasp``, ``grow/plant``, ``grow/animal`` or ``grow/generic``; a sequential goal's goal type."""
    if goal.second is not None:
        return goal.goal_type
    part = goal.first
    return "grasp" if part.verb == "grasp" else f"grow/{GROW_KINDS.get(part.name, 'generic')}"


class Verdict(NamedTuple):
    """An episode's outcome, and the scene index of the object behind a failure (None when none is)."""

    cause: str
    """:data:`SUCCESS` or a :data:`CAUSES` key."""
    obj: int | None = None
    """The supply that could not grow the goal object, the first object wrongly grown or grasped, or
    (``no_combine``) the first useful object grasped."""


def classify(goal: Goal, scene: Scene, codes: list[int]) -> Verdict:
    """The :class:`Verdict` of an episode given by its action ``codes`` from the start state."""
    masks = part_masks(goal, scene)
    state, progress = State(), 0
    trail: list[tuple[State, int, tuple[str, int] | None]] = []  # steps since the last achieved part
    for code in codes:
        after, event = transition(scene, state, code)
        achieved = advance_progress(masks, progress, event)
        trail = [] if achieved > progress else [*trail, (state, code, event)]
        state, progress = after, achieved
    if progress == len(masks):
        return Verdict(SUCCESS)
    verb, targets = masks[progress]
    n = len(scene)
    grasped = [e[1] for _, _, e in trail if e is not None and e[0] == "grasp"]
    if verb == "grasp":  # every grasp in the trail is of an object the goal does not name
        if grasped:
            return Verdict("grasped_wrong", grasped[0])
        return Verdict("reached_no_grasp" if any(c < n and c in targets for _, c, _ in trail) else "no_grasp")
    for (on, held, _), code, _ in trail:  # a Go to while holding something: a try at growing
        if held is None or code >= n or code == on:
            continue
        for living, other in ((code, held), (held, code)):
            supply = scene.objects[other].category == "supply"
            if living in targets and supply and other not in scene.growers[living]:
                return Verdict("wrong_supply", other)
    grown = [e[1] for _, _, e in trail if e is not None and e[0] == "grow"]
    if grown:  # a goal object's grow would have been a success
        return Verdict("grew_wrong", grown[0])
    useful = set(targets).union(*(scene.growers[t] for t in targets))
    held_useful = [i for i in grasped if i in useful]
    if held_useful:
        return Verdict("no_combine", held_useful[0])
    return Verdict("grasped_wrong", grasped[0]) if grasped else Verdict("no_grasp")


@dataclass
class Episode:
    """One played episode: its goal and scene, and the action codes taken from the start state."""

    goal: Goal
    scene: Scene
    codes: list[int] = field(default_factory=list)
    success: bool = False
    """As the environment reported it (``classify`` must agree)."""
    shown: str = ""
    """The goal text the policy read (``goal.text`` unless reworded)."""


def train_wording(goal: Goal, scene: Scene) -> str | None:
    """``{Verb} any {colour} thing``, a train goal, when it names exactly the objects ``goal`` names here.

    E.g. ``Grow red tree`` in {red tree, green water, blue cat} becomes ``Grow any red thing``: the same
    objects achieve both, so the environment's success judges the reworded goal too. None for
    sequential goals, for train goals, and where the colour would also name another object.
    """
    if goal.second is not None or goal.first.name == THING:
        return None
    [(_, targets)] = part_masks(goal, scene)
    colours = {scene.objects[i].colour for i in targets}
    if len(colours) != 1:
        return None
    generic = SimpleGoal(goal.first.verb, colours.pop(), THING)
    named = {i for i, o in enumerate(scene.objects) if generic.matches(o)}
    return generic.text if named == set(targets) else None


class _Recorder(EpisodeHook):
    """Each episode's goal, scene, action codes and success, env by env; the policy reads ``shown``."""

    def __init__(self, reword: bool) -> None:
        self.reword = reword
        self.envs: list[PlaygroundText] = []
        self.current: list[Episode] = []
        self.played: list[list[Episode]] = []
        """played[i]: env i's counted episodes, in order."""

    def _start(self, env: PlaygroundText) -> Episode:
        shown = train_wording(env.goal, env.scene) if self.reword else None
        return Episode(env.goal, env.scene, shown=shown or env.goal.text)

    def started(self, envs: PlaygroundTextVecEnv) -> None:
        self.envs = envs.envs
        self.current = [self._start(env) for env in self.envs]
        self.played = [[] for _ in self.envs]

    def prompts(self, obs: VecObs) -> list[str]:
        return [render_prompt(o, ep.shown) for o, ep in zip(obs.observations, self.current, strict=True)]

    def acting(self, action_ids: np.ndarray) -> None:
        for ep, env, a in zip(self.current, self.envs, action_ids.tolist(), strict=True):
            ep.codes.append(env.admissible_codes[a])

    def ended(self, env: int, end: EpisodeEnd, counted: bool) -> None:
        if counted:
            self.current[env].success = end.success
            self.played[env].append(self.current[env])
        self.current[env] = self._start(self.envs[env])


def rollout(
    policy: Policy,
    env_cfg: EnvConfig,
    split: SplitName,
    episodes: int,
    seed: int,
    greedy: bool,
    reword: bool = False,
) -> list[Episode]:
    """``evaluate``'s episodes (:func:`~sac_glam.run.evaluation.play_episodes`), with their actions.

    ``reword``: the policy reads :func:`train_wording`'s text instead of the goal where there is one.
    """
    recorder = _Recorder(reword)
    play_episodes(policy, env_cfg, split, episodes, seed, greedy, recorder)
    # Env by env: env i plays the same (goal, scene) sequence whatever the policy, the end order varies.
    return [ep for played in recorder.played for ep in played]


def reworded_success(plain_eps: list[Episode], reworded: list[Episode]) -> dict[str, list[int]]:
    """category -> [episodes reworded, successes with the goal's own text, successes reworded].

    Both lists hold the same episodes (the same seed): only what the policy read differs.
    """
    out: dict[str, list[int]] = {}
    for a, b in zip(plain_eps, reworded, strict=True):
        if a.goal != b.goal or a.scene != b.scene:
            raise RuntimeError(f"{PROG}: the reworded rollout met other episodes than the plain one")
        if b.shown != b.goal.text:
            cell = out.setdefault(goal_category(a.goal), [0, 0, 0])
            cell[0] += 1
            cell[1] += int(a.success)
            cell[2] += int(b.success)
    return dict(sorted(out.items()))


def has_decoy(goal: Goal, scene: Scene) -> bool:
    """Whether a Grow goal's scene holds a living thing the goal does not name (it could be grown instead)."""
    _, targets = part_masks(goal, scene)[0]
    return any(o.living and i not in targets for i, o in enumerate(scene.objects))


def tabulate(episodes: list[Episode]) -> dict[str, Any]:
    """The counts ``--json`` writes, each a partition of the episodes it covers:

    ``outcomes``: category (and ``all``) -> outcome -> episodes; ``objects``: cause -> category of its
    :attr:`Verdict.obj` -> episodes (``grew_wrong -> {"animal": 9}``: nine episodes grew an animal the goal
    does not name); ``decoys``: simple Grow category -> ``decoy`` / ``no_decoy`` (:func:`has_decoy`) ->
    [episodes, successes].
    """
    table: dict[str, dict[str, int]] = {}
    objects: dict[str, dict[str, int]] = {}
    decoys: dict[str, dict[str, list[int]]] = {}
    for ep in episodes:
        verdict = classify(ep.goal, ep.scene, ep.codes)
        if (verdict.cause == SUCCESS) != ep.success:
            raise RuntimeError(
                f"{PROG}: replaying {ep.goal.text!r} gives {verdict.cause}, the env said {ep.success}"
            )
        category = goal_category(ep.goal)
        for key in (category, "all"):
            row = table.setdefault(key, dict.fromkeys(OUTCOMES, 0))
            row[verdict.cause] += 1
        if verdict.obj is not None:
            what = objects.setdefault(verdict.cause, {})
            kind = ep.scene.objects[verdict.obj].category
            what[kind] = what.get(kind, 0) + 1
        if category.startswith("grow/"):
            cell = decoys.setdefault(category, {"decoy": [0, 0], "no_decoy": [0, 0]})
            n_success = cell["decoy" if has_decoy(ep.goal, ep.scene) else "no_decoy"]
            n_success[0] += 1
            n_success[1] += int(ep.success)
    order = dict(sorted(table.items(), key=lambda kv: (kv[0] == "all", kv[0])))
    return {"outcomes": order, "objects": objects, "decoys": dict(sorted(decoys.items()))}


def diagnose(
    path: Path, split: SplitName, episodes: int, seed: int | None, policy_name: str
) -> dict[str, Any]:
    """One run's (or checkpoint file's) numbers, as ``--json`` writes them."""
    from sac_glam.benchmarks.actor_critic import _QPolicy, load_run
    from sac_glam.benchmarks.heldout_probes import release_wrong_plant, supply_choice

    cfg, ckpt, backend = load_run(path, PROG, algos=("sac", "ppo"))
    sac = cfg.train.algo == "sac"
    if policy_name == "argmax_q" and not sac:
        raise SystemExit(f"{PROG}: --policy argmax_q needs a SAC run (a critic); {path} is {cfg.train.algo}")
    seed = cfg.train.seed + 10_000 if seed is None else seed
    q_agent = backend.agent if sac else None
    policy = _QPolicy(backend.agent) if policy_name == "argmax_q" else backend
    greedy = policy_name != "pi"
    eps = rollout(policy, cfg.env, split, episodes, seed, greedy)
    counts = tabulate(eps)
    if split == "test":  # the same episodes, read in train wording where that names the same objects
        counts["reworded"] = reworded_success(
            eps, rollout(policy, cfg.env, split, episodes, seed, greedy, True)
        )
    # One row per episode, for pairing the same episodes across checkpoints (see transitions()).
    rows = [[ep.goal.text, list(ep.scene.names), classify(ep.goal, ep.scene, ep.codes).cause] for ep in eps]
    return {"run": str(path), "step": int(ckpt["loop"]["steps"]), "split": split, "policy": policy_name,
            "seed": seed, "episodes": len(eps), "success": counts["outcomes"]["all"][SUCCESS] / len(eps),
            **counts, "supply": supply_choice(backend, q_agent, cfg.env, split, seed),
            "wrong_plant": release_wrong_plant(backend, q_agent, cfg.env, seed), "per_episode": rows}  # fmt: skip


def transitions(first: dict[str, Any], last: dict[str, Any]) -> dict[str, dict[str, int]] | None:
    """Outcome at ``first`` -> outcome at ``last`` -> episodes, when both played the same episodes.

    The evaluation environments draw goals and scenes from their own generators at reset only, so two
    checkpoints evaluated with the same seed, split and episode count meet the same (goal, scene)
    sequence; None when they did not (another run's seed, say).
    """
    a, b = first["per_episode"], last["per_episode"]
    if [r[:2] for r in a] != [r[:2] for r in b]:
        return None
    out: dict[str, dict[str, int]] = {}
    for (*_, was), (*_, now) in zip(a, b, strict=True):
        out.setdefault(was, dict.fromkeys(OUTCOMES, 0))[now] += 1
    return {k: out[k] for k in OUTCOMES if k in out}


def print_result(r: dict[str, Any]) -> None:
    print(f"\n{r['run']}  step {r['step']}  split {r['split']}  policy {r['policy']}  seed {r['seed']}: "
          f"success {r['success']:.2f} over {r['episodes']} episodes")  # fmt: skip
    print(f"{'category':<16} {'n':>4} " + " ".join(f"{k:>{max(len(k), 5)}}" for k in OUTCOMES))
    for cat, row in r["outcomes"].items():
        n = sum(row.values())
        print(f"{cat:<16} {n:>4} " + " ".join(f"{row[k] / n:>{max(len(k), 5)}.2f}" for k in OUTCOMES))
    for cause, what in r["objects"].items():
        print(
            f"{cause} objects: "
            + ", ".join(f"{k} {v}" for k, v in sorted(what.items(), key=lambda kv: -kv[1]))
        )
    for cat, cell in r["decoys"].items():
        print(f"{cat}: success " + ", ".join(f"{s / n if n else float('nan'):.2f} {k.replace('_', ' ')} (n {n})"
                                              for k, (n, s) in cell.items()))  # fmt: skip
    for cat, (n, own, train) in r.get("reworded", {}).items():
        print(f"{cat}: {n} episodes where '{{Verb}} any {{colour}} thing' names the same objects: success "
              f"{own / n:.2f} with the goal's text, {train / n:.2f} with that train wording")  # fmt: skip
    for kind, s in r["supply"].items():
        for who in ("pi", "argmax_q"):
            if who in s:
                shares = ", ".join(f"{a} {v:.2f}" for a, v in s[who].items())
                print(f"holding {'an' if kind == 'animal' else 'a'} {kind} named by a Grow goal "
                      f"({s['states']} states), {who}: {shares}")  # fmt: skip

    w = r["wrong_plant"]
    q = "" if w["argmax_q"] is None else f", argmax Q picks Release in {w['argmax_q']:.2f}"
    print(f"control: holding a plant a train goal does not name ({w['states']} states): "
          f"pi(Release) {w['pi']:.2f}{q}")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=PROG, description=plain(__doc__),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("runs", nargs="+", type=Path, help="run directories, or checkpoint files inside one")
    parser.add_argument(
        "--split", default="test", choices=["test", "train"], help="goal split of the episodes"
    )
    parser.add_argument(
        "--episodes", type=int, default=128, help="episodes (rounded up to a multiple of env.n_envs)"
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="episode seed (default: the run's evaluation seed)"
    )
    parser.add_argument("--policy", default="pi", choices=["pi", "argmax_pi", "argmax_q"],
                        help="pi sampled (as the loop evaluates), its argmax, or argmax min_k Q (SAC)")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="also write the results (a list) here")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.episodes < 1:
        raise SystemExit(f"{PROG}: --episodes must be >= 1, got {args.episodes}")
    torch.set_num_threads(args.threads)
    print("causes: " + "; ".join(f"{k}: {v}" for k, v in CAUSES.items()))
    results = []
    for run in args.runs:
        results.append(diagnose(run, args.split, args.episodes, args.seed, args.policy))
        print_result(results[-1])
    moved = transitions(results[0], results[-1]) if len(results) > 1 else None
    if moved is not None:
        print(
            f"\nthe same episodes, outcome at step {results[0]['step']} (rows) -> at step {results[-1]['step']}:"
        )
        print(f"{'':<16} " + " ".join(f"{k:>{max(len(k), 5)}}" for k in OUTCOMES))
        for was, row in moved.items():
            print(f"{was:<16} " + " ".join(f"{row[k]:>{max(len(k), 5)}}" for k in OUTCOMES))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
