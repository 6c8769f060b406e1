"""Cost of one SAC update (or PPO minibatch) in two source trees, alternated, 1 thread (issue 15, item 3).

Each round runs one child process per tree (``PYTHONPATH=TREE``, so the tree's own ``sac_glam`` is
imported, with this venv's packages): it builds the CPU default (``sac_glam_her_cpu`` + overrides) as
``train`` does, fills a replay buffer with random-policy episodes (seeded: both trees score the same
batches), runs ``--warmup`` untimed then ``--updates`` timed ``buffer.sample`` + ``SACUpdater.update``
steps, and reports wall and process-CPU milliseconds of each. Rounds alternate old/new, so a load that
drifts on a shared machine meets both; the CPU time excludes the waits for a core that inflate wall
time there (it still pays for memory-bandwidth contention). Prints medians over all timed updates of
all rounds, per update and per scored (prompt, action) pair, and the new/old ratios::

    mkdir -p /tmp/old-tree && git archive 5a50131 sac_glam lamorel_configs | tar -x -C /tmp/old-tree
    OMP_NUM_THREADS=1 .venv/bin/python scripts/compare_update_cost.py /tmp/old-tree . --rounds 4
    OMP_NUM_THREADS=1 .venv/bin/python scripts/compare_update_cost.py /tmp/old-tree . --ppo   # PPO-GLAM

``--ppo`` times PPO-GLAM's minibatch instead (``ppo_glam_cpu``: one forward + backward of the policy
LLM with the value head, on ``--batch`` random-policy transitions).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys, time
import numpy as np, torch
torch.set_num_threads(1)
args = json.loads(sys.argv[1])
from sac_glam.benchmarks.scaling import fill_buffer, make_config, n_pairs
from sac_glam.run.factory import make_agent, make_updater
cfg = make_config(args["overrides"])
torch.manual_seed(0)
agent = make_agent(cfg)
rng = np.random.default_rng(0)
walls, cpus, pairs = [], [], []
if args["ppo"]:
    from sac_glam.run.configs import load_config
    from sac_glam.buffers.rollout import PPOBatch
    pcfg = load_config("ppo_glam_cpu", args["overrides"])
    torch.manual_seed(0)
    agent = make_agent(pcfg)
    updater = make_updater(pcfg, agent)
    buf = fill_buffer(cfg, 8, 0)
    def batch():
        b = buf.sample(args["batch"], rng)
        n = len(b.prompts)
        g = torch.Generator().manual_seed(len(walls))
        adv, ret = torch.randn(n, generator=g), torch.randn(n, generator=g)
        return PPOBatch(b.prompts, b.actions, b.action_ids, torch.full((n,), -1.5), ret - adv, adv, ret)
    count = lambda b: sum(map(len, b.actions))
else:
    updater = make_updater(cfg, agent)
    buf = fill_buffer(cfg, 64, 0)
    batch = lambda: buf.sample(args["batch"], rng)
    count = n_pairs
for i in range(args["warmup"] + args["updates"]):
    b = batch()
    w0, c0 = time.perf_counter(), time.process_time()
    updater.update(b)
    w1, c1 = time.perf_counter(), time.process_time()
    if i >= args["warmup"]:
        walls.append(1e3 * (w1 - w0)); cpus.append(1e3 * (c1 - c0)); pairs.append(count(b))
print(json.dumps({"wall_ms": walls, "cpu_ms": cpus, "pairs": pairs}))
"""


def run_tree(tree: Path, args: argparse.Namespace) -> dict[str, list[float]]:
    env = dict(os.environ, PYTHONPATH=str(tree.resolve()), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    payload = json.dumps({"overrides": args.overrides, "batch": args.batch, "warmup": args.warmup,
                          "updates": args.updates, "ppo": args.ppo})  # fmt: skip
    out = subprocess.run([sys.executable, "-c", CHILD, payload], env=env, cwd=tree, capture_output=True,
                         text=True, check=False)  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"{tree}: child failed\n{out.stderr[-3000:]}")
    result: dict[str, list[float]] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--updates", type=int, default=8, help="timed updates per child")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--ppo", action="store_true", help="time PPO-GLAM minibatches instead")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    runs: dict[str, dict[str, list[float]]] = {"old": {}, "new": {}}
    for r in range(args.rounds):
        for name in ("old", "new") if r % 2 == 0 else ("new", "old"):
            res = run_tree(getattr(args, name), args)
            for key, values in res.items():
                runs[name].setdefault(key, []).extend(values)
            print(f"round {r + 1} {name}: median {statistics.median(res['wall_ms']):.1f} ms wall, "
                  f"{statistics.median(res['cpu_ms']):.1f} ms CPU", flush=True)  # fmt: skip
    what = "PPO minibatch" if args.ppo else "SAC update"
    print(f"\n{what}, batch {args.batch}, medians of {args.rounds} x {args.updates} updates per tree:")
    med = {n: {k: statistics.median(v) for k, v in runs[n].items()} for n in runs}
    for name in ("old", "new"):
        m = med[name]
        print(f"{name}: {m['wall_ms']:.1f} ms wall, {m['cpu_ms']:.1f} ms CPU per update; "
              f"{1e3 * m['wall_ms'] / m['pairs']:.0f} / {1e3 * m['cpu_ms'] / m['pairs']:.0f} us per pair "
              f"(wall / CPU), {m['pairs']:.0f} pairs")  # fmt: skip
    for key in ("wall_ms", "cpu_ms"):
        print(f"new / old, {key[:-3]}: {med['new'][key] / med['old'][key]:.3f}")


if __name__ == "__main__":
    main()
