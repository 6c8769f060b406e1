"""``sac-glam probe``: can the LLM policy learn Playground-Text at all, and how many gradient steps does it take?

A supervised learnability probe, not RL: behaviour cloning of the expert (``sac_glam/envs/expert.py``,
a shortest plan) through the policy's own scoring (``forward_actions``, the config's normalisation).
States come from random-policy episodes; each is labelled with the first action of a shortest plan.
Printed: accuracy (argmax pi = the expert's action) on 500 held-out states every ``--eval-every``
gradient steps. The ceiling is below 1: when two first actions are equally short, the expert names one.

Why: if the architecture needs N gradient steps of perfect supervision to tell the goal's object from
the others, an RL run that makes fewer gradient steps than N (SAC's ``n_updates`` per ``update_every``
transitions, PPO's epochs) cannot do it either, whatever its losses. README, "CPU presets".

    sac-glam probe                                    # the learning test's model and environment
    sac-glam probe model.tiny.pretrain_steps=1500 model.tiny.pretrain_lr=3.0e-3
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import numpy as np
import torch

from sac_glam.config import load_config
from sac_glam.envs.expert import shortest_plan
from sac_glam.envs.playground_text import PlaygroundText
from sac_glam.llm.models import load_model
from sac_glam.llm.scoring import forward_actions

SMALLEST = ["env.n_objects=2", "env.goal_types=[grasp]", "env.max_steps=4",
            "model.tiny.d_model=32", "model.tiny.n_layers=1", "model.tiny.d_ff=64"]  # fmt: skip
"""The environment and model of ``tests/test_learning.py``."""

Example = tuple[str, list[str], int]
"""(prompt, admissible actions, index of the expert's action)."""


def expert_states(env: PlaygroundText, n: int, seed: int) -> list[Example]:
    """``n`` states from random-policy episodes, each with the first action of a shortest plan."""
    rng = np.random.default_rng(seed)
    out: list[Example] = []
    while len(out) < n:
        env.reset(seed=int(rng.integers(2**31)))
        done = False
        while not done and len(out) < n:
            plan = shortest_plan(env.scene, env.masks, env.state, env.progress)
            out.append((env.prompt, env.admissible_actions, env.admissible_codes.index(plan[0])))
            _, _, terminated, truncated, _ = env.step_index(int(rng.integers(len(env.admissible_codes))))
            done = terminated or truncated
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sac-glam probe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument(
        "overrides", nargs="*", help="key=value config overrides (after the smallest environment's)"
    )
    parser.add_argument(
        "--config-name", default="sac_glam_her_cpu", help="config of the model and environment"
    )
    parser.add_argument("--steps", type=int, default=1500, help="gradient steps")
    parser.add_argument("--batch", type=int, default=64, help="states per gradient step")
    parser.add_argument(
        "--lr", type=float, default=1.0e-3, help="Adam learning rate (the CPU presets' actor_lr)"
    )
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if min(args.steps, args.batch, args.eval_every) < 1 or args.lr <= 0:
        parser.error("--steps, --batch and --eval-every must be >= 1 and --lr > 0")
    cfg = load_config(args.config_name, [*SMALLEST, *args.overrides])
    torch.set_num_threads(args.threads)
    env = PlaygroundText(cfg.env, split="train")
    data = expert_states(env, 6000, args.seed)
    held_out, train = data[:500], data[500:]
    torch.manual_seed(args.seed)
    lm = load_model(cfg.model)
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

    print(f"behaviour cloning of the expert: {cfg.model.name} (d_model {cfg.model.tiny.d_model}, "
          f"pretrain_steps {cfg.model.tiny.pretrain_steps}), N = {cfg.env.n_objects}, lr {args.lr}")  # fmt: skip
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
    return 0
