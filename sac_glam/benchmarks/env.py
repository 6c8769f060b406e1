"""Environment throughput: vector-env steps per second with random admissible actions.

Counts what a training step needs from the environment: stepping, auto-reset, the social partner at
episode ends, and rendering every env's prompt. Run::

    python -m sac_glam.benchmarks.env --n-envs 32 --steps 2000
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from sac_glam.benchmarks import print_rows
from sac_glam.config import EnvConfig
from sac_glam.envs.vector import PlaygroundTextVecEnv


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-envs", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2000, help="vector steps (each steps every env)")
    parser.add_argument("--n-objects", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    # Sequential goals need 4 objects; smaller scenes get simple goals, as the paper's N = 3 ablation.
    sequential = args.n_objects >= 4
    config = EnvConfig(n_objects=args.n_objects, n_envs=args.n_envs, sequential_goals=sequential)
    envs = PlaygroundTextVecEnv(config, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    obs = envs.reset()
    episodes = successes = 0
    for _ in range(args.steps):
        # A random admissible index per env: floor(u * |A_i|) with u in [0, 1).
        n_actions_E = np.fromiter(map(len, obs.actions), dtype=np.int64, count=args.n_envs)
        ids_E = (rng.random(args.n_envs) * n_actions_E).astype(np.int64)
        step = envs.step(ids_E)
        obs = step.obs
        for end in step.ends:
            if end is not None:
                episodes += 1
                successes += end.success
    elapsed = time.perf_counter() - start
    env_steps = args.steps * args.n_envs
    rows = [
        ("n_envs", f"{args.n_envs}"),
        ("n_objects", f"{args.n_objects}"),
        ("sequential goals", f"{sequential}"),
        ("env steps", f"{env_steps}"),
        ("episodes", f"{episodes} ({successes} successes)"),
        ("seconds", f"{elapsed:.2f}"),
        ("env steps/s", f"{env_steps / elapsed:,.0f}"),
    ]
    print_rows(rows)


if __name__ == "__main__":
    main()
