"""``sac-glam probe``: can the LLM policy learn Playground-Text at all, and how many gradient steps does it take?

A supervised learnability probe, not RL: behaviour cloning of the expert (``sac_glam/envs/expert.py``,
a shortest plan) through the policy's own scoring (``forward_actions``, the config's normalisation).
States come from random-policy episodes; each is labelled with the first action of a shortest plan.
Printed: accuracy (argmax pi = the expert's action) on 500 held-out states every ``--eval-every``
gradient steps (the ceiling is below 1: when two first actions are equally short, the expert names one),
then the cloned policy's episode success by goal type on train and held-out test goals (``--episodes``
episodes of each type and split), and on ``--episodes`` episodes of the environment's own train-goal
distribution, acting by argmax and by sampling from pi: what an RL run with perfect credit assignment
could reach.

Why: if the architecture needs N gradient steps of perfect supervision to tell the goal's object from
the others, an RL run that makes fewer gradient steps than N (SAC's ``n_updates`` per ``update_every``
transitions, PPO's epochs) cannot do it either, whatever its losses. README, "CPU presets".

    sac-glam probe                                    # the learning test's model and environment
    sac-glam probe model.tiny.pretrain_steps=1500 model.tiny.pretrain_lr=3.0e-3
    sac-glam probe --run runs/sac_glam_her_cpu/seed0  # a trained run: is the actor or the critic behind?
    sac-glam probe --env config --config-name sac_glam_her_full_cpu --expert-share 0.5  # the full environment

``--env smallest`` (the default) puts the learning test's environment and model before the overrides;
``--env config`` keeps the config's own. ``--expert-share p`` collects the states with a policy that takes
the expert's action with probability p (else a random one): on sequential goals a random policy seldom
completes a goal's first part, so the states where the second part must be done are rare without it.

With ``--run DIR`` nothing is trained: the run's last checkpoint is loaded (``sac_glam.run.trained``) and, on
``--states`` expert-labelled states of its own environment (train goals), the share of states where
argmax pi, and argmax min_k Q (SAC), is the expert's action is printed, over all states and by goal
type and parts of the goal already achieved (``--expert-share`` collects the states as above). A critic
that ranks actions right while the actor does not points at the policy update, not at credit assignment.
``--run-episodes n`` then plays n episodes per split and goal type with the run's actor, by argmax and by
sampling from pi (evaluation samples): the gap is what the policy's entropy costs on long plans.

    sac-glam probe --run runs/her_full/seed0 --states 2000 --expert-share 0.5   # the full environment
    sac-glam probe --run runs/her_full/seed0 --states 500 --run-episodes 64

``--run`` also counts the *optimal* actions (any first action of a shortest plan; with six objects two
are often equally short, where the expert names one) and pi's mass on them.

``--critic all|taken`` asks the same question of the critic: the config's critic (its LLM and Q heads) is
regressed on Q*(s, a) = gamma^(steps to the goal - 1) of the labelled states, on every action's value
(``all``) or on one drawn action's per state (``taken``, what a TD update sees of a state); printed, the
held-out share of states whose argmax min_k Q is optimal. Set against ``--run``'s share for a SAC run,
it separates what the critic can represent from what its bootstrapped targets teach it:

    sac-glam probe --env config --config-name sac_glam_her_full_cpu --expert-share 0.5 --critic all --batch 128
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from sac_glam.config import Config, ConfigError, EnvConfig
from sac_glam.envs.expert import action_steps, shortest_plan
from sac_glam.envs.goals import GOAL_TYPES
from sac_glam.envs.playground_text import PlaygroundText
from sac_glam.helptext import plain
from sac_glam.llm.models import load_model
from sac_glam.llm.scoring import forward_actions
from sac_glam.pretrain import pretrain_tiny
from sac_glam.run.configs import load_config

SMALLEST = ["env.n_objects=2", "env.goal_types=[grasp]", "env.max_steps=4", "model.tiny.d_model=32",
            "model.tiny.n_layers=2", "model.tiny.n_heads=4", "model.tiny.d_ff=64"]  # fmt: skip
"""The environment and model of ``tests/test_learning.py``."""

Example = tuple[str, list[str], int]
"""(prompt, admissible actions, index of the expert's action)."""


def expert_states(env: PlaygroundText, n: int, seed: int, expert_share: float = 0.0) -> list[Example]:
    """``n`` states, each with the first action of a shortest plan, from episodes of a policy that takes
    that action with probability ``expert_share`` and a uniformly random one otherwise.

    An episode ends early where its goal has become unreachable (objects grow once, so a sequential
    goal's second part is lost when its object grew before the first part was achieved)."""
    return [s.example for s in labelled_states(env, n, seed, expert_share)]


Stratum = tuple[str, int]
"""(goal type, parts of the goal already achieved): where in a goal a state is."""


class Labelled(NamedTuple):
    """A state of :func:`labelled_states`."""

    example: Example
    stratum: Stratum
    steps: list[int | None] | None
    """Per admissible action, the fewest steps to the goal with it first (``expert.action_steps``);
    None unless asked for (it costs a search per action)."""

    def optimal(self) -> list[bool]:
        """Which actions start a shortest plan (ties included)."""
        assert self.steps is not None
        best = min(k for k in self.steps if k is not None)
        return [k == best for k in self.steps]

    def q_star(self, gamma: float) -> list[float]:
        """Q*(s, a) = gamma^(steps - 1) (reward 1 at the achieving step), 0 where the goal is lost."""
        assert self.steps is not None
        return [0.0 if k is None else gamma ** (k - 1) for k in self.steps]


def labelled_states(
    env: PlaygroundText, n: int, seed: int, expert_share: float = 0.0, steps: bool = False
) -> list[Labelled]:
    """:func:`expert_states` with each state's :data:`Stratum`, for per-goal-type diagnoses, and with
    ``steps`` every action's distance to the goal (which actions are optimal, Q*)."""
    rng = np.random.default_rng(seed)
    out: list[Labelled] = []
    while len(out) < n:
        env.reset(seed=int(rng.integers(2**31)))
        done = False
        while not done and len(out) < n:
            try:
                plan = shortest_plan(env.scene, env.masks, env.state, env.progress)
            except RuntimeError:  # a sequential goal whose second part's object grew too early: no label
                break
            label = env.admissible_codes.index(plan[0])
            dist = action_steps(env.scene, env.masks, env.state, env.progress) if steps else None
            example = (env.prompt, env.admissible_actions, label)
            out.append(Labelled(example, (env.goal.goal_type, env.progress), dist))
            random = int(rng.integers(len(env.admissible_codes)))
            _, _, terminated, truncated, _ = env.step_index(label if rng.random() < expert_share else random)
            done = terminated or truncated
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sac-glam probe", description=plain(__doc__),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument(
        "overrides", nargs="*", help="key=value config overrides (after the smallest environment's)"
    )
    parser.add_argument(
        "--config-name", default="sac_glam_her_cpu", help="config of the model and environment"
    )
    parser.add_argument("--env", choices=["smallest", "config"], default="smallest",
                        help="smallest: the learning test's environment and model under the overrides; config: the config's own")  # fmt: skip
    parser.add_argument("--data", type=int, default=6000, help="labelled states, the first 500 held out")
    parser.add_argument("--expert-share", type=float, default=0.0,
                        help="probability that the state-collecting policy takes the expert's action")  # fmt: skip
    parser.add_argument("--steps", type=int, default=1500, help="gradient steps")
    parser.add_argument("--batch", type=int, default=64, help="states per gradient step")
    parser.add_argument(
        "--lr", type=float, default=1.0e-3, help="Adam learning rate (the CPU presets' actor_lr)"
    )
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--episodes", type=int, default=200, help="episodes of the final success rates")
    parser.add_argument("--run", type=Path,
                        help="diagnose this run directory instead of cloning (uses --states, --expert-share, --run-episodes, --seed, --threads)")  # fmt: skip
    parser.add_argument("--states", type=int, default=400, help="states labelled for --run")
    parser.add_argument("--run-episodes", type=int, default=0,
                        help="with --run: episodes per split and goal type of the actor's success, argmax and sampled")  # fmt: skip
    parser.add_argument("--critic", choices=["all", "taken"],
                        help="regress the config's critic on Q* instead of cloning the expert: on every admissible action's Q* (all) or on one drawn action's per state, as a TD update sees it (taken)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if min(args.steps, args.batch, args.eval_every, args.episodes) < 1 or args.lr <= 0:
        parser.error("--steps, --batch, --eval-every and --episodes must be >= 1 and --lr > 0")
    if args.run_episodes < 0:
        parser.error(f"--run-episodes must be >= 0, got {args.run_episodes}")
    if args.data < 501 or not 0.0 <= args.expert_share <= 1.0:
        parser.error(
            f"--data must be > 500 (got {args.data}) and --expert-share in [0, 1] (got {args.expert_share})"
        )
    torch.set_num_threads(args.threads)
    if args.run is not None:
        if args.overrides:
            parser.error(f"--run diagnoses the run's own config; drop the overrides {args.overrides}")
        return diagnose(args.run, args.states, args.seed, args.expert_share, args.run_episodes)
    cfg = load_config(args.config_name, [*(SMALLEST if args.env == "smallest" else []), *args.overrides])
    env = PlaygroundText(cfg.env, split="train")
    if args.critic is not None:
        return fit_critic(cfg, env, args)
    data = expert_states(env, args.data, args.seed, args.expert_share)
    held_out, train = data[:500], data[500:]
    torch.manual_seed(args.seed)
    lm = load_model(cfg.model, pretrain=pretrain_tiny)
    opt = torch.optim.Adam([p for p in lm.model.parameters() if p.requires_grad], lr=args.lr)
    rng = np.random.default_rng(args.seed + 1)

    def forward(batch: list[Example]) -> torch.Tensor:
        fwd = forward_actions(lm.model, lm.tokenizer, [p for p, _, _ in batch], [a for _, a, _ in batch],
                              minibatch_size=cfg.model.minibatch_size, normalization=cfg.model.normalization)  # fmt: skip
        return fwd.log_pi_BA.masked_fill(~fwd.mask_BA, -torch.inf)

    def accuracy() -> float:
        with torch.no_grad():
            pred = forward(held_out).argmax(1)
        return float((pred == torch.tensor([y for *_, y in held_out])).float().mean())

    tiny = cfg.model.tiny
    print(f"behaviour cloning of the expert: {cfg.model.name} (d_model {tiny.d_model}, layers {tiny.n_layers}, "
          f"pretrain_steps {tiny.pretrain_steps}), N = {cfg.env.n_objects}, lr {args.lr}")  # fmt: skip
    print(f"{'grad steps':>10}  {'held-out accuracy':>17}  {'wall s':>6}")
    t0 = time.perf_counter()
    for step in range(args.steps + 1):
        if step % args.eval_every == 0 or step == args.steps:
            print(f"{step:>10}  {accuracy():>17.3f}  {time.perf_counter() - t0:>6.0f}", flush=True)
        if step == args.steps:
            break
        batch = [train[int(i)] for i in rng.integers(len(train), size=args.batch)]
        labels = torch.tensor([y for *_, y in batch])
        lm.model.train()
        loss = -forward(batch)[torch.arange(len(batch)), labels].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        lm.model.eval()

    def policy(batch: list[Example]) -> torch.Tensor:
        return forward(batch)[0]

    print_success_by_type(cfg.env, policy, args.episodes, args.seed + 3)
    for greedy in (True, False):
        rate = episode_success(env, policy, args.episodes, greedy, args.seed + 2)
        print(f"episode success ({'argmax' if greedy else 'sampled'}): {rate:.3f}", flush=True)
    return 0


def fit_critic(cfg: Config, env: PlaygroundText, args: argparse.Namespace) -> int:
    """``--critic``: supervised regression of the config's critic (LLM and Q heads, as SAC trains them) on
    Q*(s, a) = gamma^(steps - 1) of expert-labelled states, the per-critic MSE summed over the K critics as
    in ``sac.critic_loss``. Printed: the held-out share of states whose argmax min_k Q is an optimal action.

    What a critic can learn per gradient step with perfect targets, against what TD learning gets from
    its own bootstrapped ones (``--run``): ``all`` gives every action its target, ``taken`` one drawn
    action per state, which is all a TD update sees of a state."""
    from sac_glam.run.factory import make_agent

    data = labelled_states(env, args.data, args.seed, args.expert_share, steps=True)
    held_out, train = data[:500], data[500:]
    torch.manual_seed(args.seed)
    agent = make_agent(cfg)
    groups = agent.parameter_groups()
    shared = cfg.critic.share_llm and cfg.critic.backprop_llm  # the critic then trains the policy's LLM
    opt = torch.optim.Adam(groups["critic"] + (groups["llm"] if shared else []), lr=args.lr)
    rng = np.random.default_rng(args.seed + 1)

    def q_min(batch: Sequence[Labelled]) -> tuple[torch.Tensor, torch.Tensor]:
        out = agent.evaluate([s.example[0] for s in batch], [s.example[1] for s in batch], q=True)
        assert out.q_KBA is not None
        return out.q_KBA, out.mask_BA

    def targets(batch: Sequence[Labelled], width: int) -> torch.Tensor:
        q_BA = torch.zeros(len(batch), width)
        for b, s in enumerate(batch):
            q_BA[b, : len(s.example[1])] = torch.tensor(s.q_star(cfg.sac.gamma))
        return q_BA

    def evaluation() -> tuple[float, float]:
        with torch.no_grad():
            q_KBA, mask_BA = q_min(held_out)
        q_BA = q_KBA.min(0).values
        pick_B = q_BA.masked_fill(~mask_BA, -torch.inf).argmax(-1)
        hit = _padded_optimal(held_out, mask_BA.shape[1]).gather(1, pick_B[:, None]).float().mean()
        err = ((q_BA - targets(held_out, mask_BA.shape[1])) ** 2 * mask_BA).sum() / mask_BA.sum()
        return float(hit), float(err)

    tiny = cfg.model.tiny
    print(f"critic regression on Q* ({args.critic} actions): {cfg.model.name} (d_model {tiny.d_model}, layers "
          f"{tiny.n_layers}, pretrain_steps {tiny.pretrain_steps}), critic share_llm={cfg.critic.share_llm}, "
          f"N = {cfg.env.n_objects}, gamma {cfg.sac.gamma}, lr {args.lr}")  # fmt: skip
    print(f"{'grad steps':>10}  {'argmax Q optimal':>16}  {'MSE to Q*':>9}  {'wall s':>6}")
    t0 = time.perf_counter()
    for step in range(args.steps + 1):
        if step % args.eval_every == 0 or step == args.steps:
            hit, err = evaluation()
            print(f"{step:>10}  {hit:>16.3f}  {err:>9.4f}  {time.perf_counter() - t0:>6.0f}", flush=True)
        if step == args.steps:
            break
        batch = [train[int(i)] for i in rng.integers(len(train), size=args.batch)]
        q_KBA, mask_BA = q_min(batch)
        weight_BA = mask_BA.float()
        if args.critic == "taken":  # one admissible action per state, uniformly
            drawn_B = torch.tensor([int(rng.integers(len(s.example[1]))) for s in batch])
            weight_BA = torch.zeros_like(weight_BA).scatter_(1, drawn_B[:, None], 1.0)
        sq_KBA = (q_KBA - targets(batch, mask_BA.shape[1])) ** 2 * weight_BA
        loss = (sq_KBA.sum(-1) / weight_BA.sum(-1)).mean(-1).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return 0


def print_success_by_type(
    env_cfg: EnvConfig, log_pi: Callable[[list[Example]], torch.Tensor], n: int, seed: int
) -> None:
    """Episode success of ``log_pi`` per split and goal type, taking pi's argmax and sampling from pi."""
    print(f"episode success by goal type ({n} episodes each):")
    print(f"  {'split':<5}  {'goal type':<15}  {'argmax':>6}  {'sampled':>7}")
    for split in ("train", "test"):
        for goal_type in sampled_types(env_cfg.goal_types, env_cfg.sequential_goals):
            typed = PlaygroundText(replace(env_cfg, goal_types=[goal_type]), split=split)
            rates = [episode_success(typed, log_pi, n, greedy, seed) for greedy in (True, False)]
            print(f"  {split:<5}  {goal_type:<15}  {rates[0]:>6.3f}  {rates[1]:>7.3f}", flush=True)


def sampled_types(goal_types: Sequence[str], sequential: bool) -> list[str]:
    """The goal types an environment config samples (``env.goal_types``, empty: all of its goal set's)."""
    allowed = GOAL_TYPES if sequential else tuple(t for t in GOAL_TYPES if not t.startswith("grow_then"))
    return [t for t in allowed if not goal_types or t in goal_types]


def episode_success(
    env: PlaygroundText, log_pi: Callable[[list[Example]], torch.Tensor], n: int, greedy: bool, seed: int
) -> float:
    """Success rate of the policy ``log_pi`` (one state -> log pi over its actions) on ``n`` episodes."""
    rng = np.random.default_rng(seed)
    successes = 0
    for _ in range(n):
        env.reset(seed=int(rng.integers(2**31)))
        terminated = truncated = False
        while not (terminated or truncated):
            with torch.no_grad():
                pi = log_pi([(env.prompt, env.admissible_actions, 0)]).exp().double().numpy()
            i = int(pi.argmax()) if greedy else int(rng.choice(len(pi), p=pi / pi.sum()))
            _, _, terminated, truncated, _ = env.step_index(i)
        successes += int(terminated)
    return successes / n


def _padded_optimal(labelled: Sequence[Labelled], width: int) -> torch.Tensor:
    """(B, A) bool: which admissible actions start a shortest plan, False on padding."""
    out = torch.zeros(len(labelled), width, dtype=torch.bool)
    for b, s in enumerate(labelled):
        out[b, : len(s.example[1])] = torch.tensor(s.optimal())
    return out


def diagnose(run_dir: Path, n_states: int, seed: int, expert_share: float = 0.0, episodes: int = 0) -> int:
    """Print how often the trained actor's and critic's preferred actions are the expert's (``--run``),
    over all states and then by goal type and parts of the goal already achieved; with ``episodes``, the
    actor's episode success by goal type, argmax against sampled (what the policy's entropy costs)."""
    from sac_glam.run.trained import load_run

    try:
        run = load_run(run_dir, source="checkpoint")
    except ConfigError as err:
        raise SystemExit(f"sac-glam probe: {err}") from err
    cfg, agent = run.cfg, run.agent
    labelled = labelled_states(
        PlaygroundText(cfg.env, split="train"), n_states, seed, expert_share, steps=True
    )
    data = [s.example for s in labelled]
    is_sac = cfg.train.algo == "sac"
    with torch.no_grad():
        out = agent.evaluate([p for p, _, _ in data], [a for _, a, _ in data], q=is_sac)
    expert_B = torch.tensor([y for *_, y in data])
    optimal_BA = _padded_optimal(labelled, out.mask_BA.shape[1])
    actor_B = out.log_pi_BA.masked_fill(~out.mask_BA, -torch.inf).argmax(-1)
    hits = {"pi = expert": actor_B == expert_B}
    if is_sac:
        assert out.q_KBA is not None
        critic_B = out.q_KBA.min(0).values.masked_fill(~out.mask_BA, -torch.inf).argmax(-1)
        hits |= {"min Q = expert": critic_B == expert_B, "pi = argmax Q": actor_B == critic_B}
    # "optimal": any action that starts a shortest plan. Ties are frequent with six objects (Go to the
    # water or to the animal first), so the expert's one choice undercounts what is right.
    hits["pi optimal"] = optimal_BA.gather(1, actor_B[:, None]).squeeze(1)
    if is_sac:
        hits["min Q optimal"] = optimal_BA.gather(1, critic_B[:, None]).squeeze(1)
    print(f"{run_dir} at step {run.steps} ({cfg.train.algo}), {n_states} expert-labelled states:")
    for name, hit_B in hits.items():
        print(f"  argmax {name + ':':<18}{float(hit_B.float().mean()):.3f}")
    mass_B = (out.log_pi_BA.exp() * out.mask_BA * optimal_BA).sum(-1)
    print(f"  pi's mass on optimal actions: {float(mass_B.mean()):.3f}")
    # The chance level of the "optimal" rows: a uniform action's probability of starting a shortest plan.
    chance_B = optimal_BA.sum(-1) / out.mask_BA.sum(-1)
    print(f"  a uniform action optimal (chance): {float(chance_B.mean()):.3f}")
    # By stratum: a critic right before a sequential goal's first part and wrong after it (say) points at
    # the second part's credit assignment, which the overall share hides.
    strata = [s.stratum for s in labelled]
    print("  by goal type and parts achieved (argmax " + ", argmax ".join(hits) + "):")
    for key in sorted(set(strata), key=lambda st: (GOAL_TYPES.index(st[0]), st[1])):
        in_B = torch.tensor([st == key for st in strata])
        cells = "  ".join(f"{float(h[in_B].float().mean()):.2f}" for h in hits.values())
        print(f"    {key[0]:<16} parts done {key[1]}: n={int(in_B.sum()):<5} {cells}")
    if episodes:

        def policy(batch: list[Example]) -> torch.Tensor:
            with torch.no_grad():
                one = agent.evaluate([p for p, _, _ in batch], [a for _, a, _ in batch], q=False)
            return one.log_pi_BA[0].masked_fill(~one.mask_BA[0], -torch.inf)

        print_success_by_type(cfg.env, policy, episodes, seed + 3)
    return 0
