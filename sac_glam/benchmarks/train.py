"""``sac-glam bench train``: transitions per second of the CPU presets and where the time goes.

Runs each preset for ``--steps`` transitions (no evaluation, no checkpoint, updates as soon as the
buffer holds one batch) and prints the steady state's transitions/s, from the first gradient step to
the end, with the split of that wall time between acting (LLM scoring + sampling), environment
stepping, storing transitions, and updating (sampling batches + gradient steps). SAC's buffer receives
an episode when it ends, so the first ``max_steps x n_envs`` transitions (320 at N = 3, 480 on the full
environment) are collected without any update: a run's overall rate would count them at acting
speed (1,024 steps on the full environment were half warm-up). Give it a few thousand steps. ``--env full`` runs the full environment's presets
(``*_full_cpu``: N = 6, sequential goals, 15 steps) instead of the N = 3 CPU default's.

``--alternate`` compares variants in one run, old and new in turn: each round runs every preset once
per variant (a key=value override, ``-`` for none), and the table gives each variant's median
transitions/s over the rounds and its ratio to the first variant's. Example, the two lanes of
``train.parallel_llms`` against both LLMs on 2 threads one after the other::

    sac-glam bench train --env full --presets sac_her --steps 4096 --rounds 3 \
        --alternate train.parallel_llms=false train.parallel_llms=true
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from sac_glam.helptext import plain
from sac_glam.run.configs import load_config
from sac_glam.run.logging import read_metrics

PRESETS = {"sac": "sac_glam_cpu", "sac_her": "sac_glam_her_cpu", "ppo": "ppo_glam_cpu"}
FULL_PRESETS = {"sac": "sac_glam_full_cpu", "sac_her": "sac_glam_her_full_cpu", "ppo": "ppo_glam_full_cpu"}
"""``--env full``: the full environment's presets (N = 6, sequential goals, 15 steps)."""


def bench(preset: str, steps: int, threads: int, extra: list[str], env: str = "n3") -> dict[str, float]:
    from sac_glam.run.train import train

    with tempfile.TemporaryDirectory() as tmp:
        overrides = [f"train.total_steps={steps}", "train.eval_every=0", "train.eval_splits=[]",
                     "train.progress=false", "train.tensorboard=false", "train.checkpoint_every=0",
                     f"train.threads={threads}", f"train.run_dir={tmp}"]  # fmt: skip
        cfg = load_config((FULL_PRESETS if env == "full" else PRESETS)[preset], overrides + extra)
        cfg.train.log_every = cfg.env.n_envs  # one record per loop iteration: where updates start
        if cfg.train.algo == "sac":
            cfg.sac.learning_starts = cfg.sac.batch_size
        train(cfg)
        records = [r for r in read_metrics(Path(tmp) / "metrics.jsonl") if "time/wall_s" in r]
    return steady_state(records, from_first_update=cfg.train.algo == "sac")


def steady_state(records: list[dict[str, float]], from_first_update: bool = True) -> dict[str, float]:
    """Transitions/s and the time shares from the last record before the first gradient step to the
    last record (SAC: the warm-up before it is acting only), or over the whole run (PPO, whose every
    rollout is acting, then its update: ``--steps`` a multiple of ``ppo.n_steps`` is whole cycles);
    ``steps_per_s_overall`` is the whole run's in both cases."""
    last = records[-1]
    learning = [i for i, r in enumerate(records) if r.get("train/grad_steps", 0) > 0]
    if not learning:
        raise ValueError(f"no gradient step in {last['step']:.0f} transitions: give --steps more")
    start = learning[0] - 1 if from_first_update else -1
    first: dict[str, float] = records[start] if start >= 0 else {}

    def delta(key: str) -> float:
        return float(last.get(f"time/{key}_s", 0.0) - first.get(f"time/{key}_s", 0.0))

    wall = delta("wall") - delta("eval")
    return {
        "steps": last["step"],
        "steps_per_s": (last["step"] - first.get("step", 0.0)) / wall,
        "steps_per_s_overall": last["step"] / (last["time/wall_s"] - last.get("time/eval_s", 0.0)),
        **{k: delta(k) / wall for k in ("act", "env", "learn", "update")},
        "grad_steps": last["train/grad_steps"],
        "warmup_steps": first.get("step", 0.0),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sac-glam bench train", description=plain(__doc__))
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument(
        "--steps", type=int, default=4096, help="transitions per preset (a multiple of 2048 for PPO)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--env", choices=["n3", "full"], default="n3", help="n3: the CPU default's N = 3 "
                        "presets (*_cpu); full: the full environment's (*_full_cpu)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--alternate", nargs="+", metavar="KEY=VALUE", help="variants to compare in "
                        "turn, each one override or - for none (the ratio column is to the first)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=1, help="with --alternate: rounds of all variants")
    parser.add_argument("overrides", nargs="*", help="key=value overrides applied to every preset")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.steps < 1:
        parser.error("--rounds and --steps must be >= 1")
    names = FULL_PRESETS if args.env == "full" else PRESETS
    if args.alternate:
        for v in args.alternate:
            if v != "-" and "=" not in v:
                parser.error(f"--alternate {v!r} is not key=value or - (put the overrides of every "
                             "preset before --alternate)")  # fmt: skip
        alternate(args, names)
        return
    rows = {p: bench(p, args.steps, args.threads, args.overrides, args.env) for p in args.presets}
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(
        f"{'preset':<10} {'config':<22} {'transitions/s':>13} {'grad steps':>10} {'act':>6} {'env':>6} {'store':>6} {'update':>7}"
    )
    for p, r in rows.items():
        print(f"{p:<10} {names[p]:<22} {r['steps_per_s']:>13.1f} {r['grad_steps']:>10.0f} {r['act']:>6.1%} "
              f"{r['env']:>6.1%} {r['learn']:>6.1%} {r['update']:>7.1%}")  # fmt: skip


def alternate(args: argparse.Namespace, names: dict[str, str]) -> None:
    """``--alternate``: every preset x variant once per round, in turn, then medians and ratios."""
    variants = args.alternate
    speeds: dict[tuple[str, str], list[float]] = {(p, v): [] for p in args.presets for v in variants}
    for r in range(args.rounds):
        for p in args.presets:
            for v in variants:
                extra = [*args.overrides, *([] if v == "-" else [v])]
                speed = bench(p, args.steps, args.threads, extra, args.env)["steps_per_s"]
                speeds[p, v].append(speed)
                if not args.json:
                    print(f"round {r + 1}/{args.rounds}: {p} {v}: {speed:.1f} transitions/s", flush=True)
    medians = {k: statistics.median(s) for k, s in speeds.items()}
    if args.json:
        print(json.dumps([{"preset": p, "variant": v, "transitions_per_s": s, "median": medians[p, v],
                           "ratio": medians[p, v] / medians[p, variants[0]]}
                          for (p, v), s in speeds.items()], indent=2))  # fmt: skip
        return
    print(f"\n{'preset':<10} {'config':<22} {'variant':<32} {'transitions/s (median)':>22} {'ratio':>6}")
    for (p, v), med in medians.items():
        print(f"{p:<10} {names[p]:<22} {v:<32} {med:>22.1f} {med / medians[p, variants[0]]:>6.2f}")


if __name__ == "__main__":
    main()
