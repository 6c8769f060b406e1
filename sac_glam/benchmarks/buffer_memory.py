"""Replay buffer memory and sampling time: fill a HER buffer to capacity, report peak RSS and batch time.

Episodes come from the real vector environment with random admissible actions (``--source env``, the
social partner supplies the hindsight goals), or from a synthetic generator of scene-like texts with
``--her-goals`` random hindsight goals per episode of 10-15 steps (``--source synthetic``). The buffer
is filled past capacity (``--fill``) so that eviction runs too. Run::

    python -m sac_glam.benchmarks.buffer_memory --capacity 100000 --source env
"""

from __future__ import annotations

import argparse
import pickle
import resource
import time
from collections.abc import Iterator

import numpy as np

from sac_glam.benchmarks import print_rows
from sac_glam.buffers.her import goal_type_prior, hindsight_relabels, make_strategy
from sac_glam.buffers.replay import Episode, ReplayBuffer
from sac_glam.config import EnvConfig
from sac_glam.envs.goals import ALL_OBJECTS, goals


def peak_rss_mib() -> float:
    """Peak resident set size of this process (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def env_episodes(n_envs: int, seed: int) -> Iterator[Episode]:
    """Episodes of the real Playground-Text vector env under uniformly random admissible actions."""
    from sac_glam.envs.vector import PlaygroundTextVecEnv

    envs = PlaygroundTextVecEnv(EnvConfig(n_envs=n_envs), seed=seed)
    rng = np.random.default_rng(seed)
    obs = envs.reset()
    # Per env: the running episode's observations, action lists, action ids, rewards.
    running: list[tuple[list[str], list[list[str]], list[int], list[float]]]
    running = [([o], [a], [], []) for o, a in zip(obs.observations, obs.actions, strict=True)]
    while True:
        n_actions_E = np.array([len(a) for a in obs.actions])
        ids_E = (rng.random(n_envs) * n_actions_E).astype(np.int64)
        step = envs.step(ids_E)
        for i, end in enumerate(step.ends):
            observations, actions, action_ids, rewards = running[i]
            action_ids.append(int(ids_E[i]))
            rewards.append(float(step.rewards[i]))
            if end is None:
                observations.append(step.obs.observations[i])
                actions.append(step.obs.actions[i])
                continue
            observations.append(end.final_observation)
            actions.append(end.final_actions)
            yield Episode(
                goal=end.goal,
                observations=observations,
                actions=actions,
                action_ids=np.array(action_ids, dtype=np.int64),
                rewards=np.array(rewards, dtype=np.float32),
                terminated=end.terminated,
                truncated=end.truncated,
                hindsight=end.hindsight,
            )
            running[i] = ([step.obs.observations[i]], [step.obs.actions[i]], [], [])
        obs = step.obs


def synthetic_episodes(her_goals: int, seed: int) -> Iterator[Episode]:
    """Scene-like texts (6 objects, position, held, grown), 10-15 steps, ``her_goals`` hindsight goals."""
    rng = np.random.default_rng(seed)
    train = [g.text for g in goals("train")]
    while True:
        scene = [str(ALL_OBJECTS[i]) for i in rng.choice(len(ALL_OBJECTS), size=6, replace=False)]
        T = int(rng.integers(10, 16))
        on, held, grown = "nothing", "nothing", "nothing"
        observations, actions = [], []
        for _ in range(T + 1):
            observations.append(
                f"You see: {', '.join(scene)}\nYou are on: {on}\nYou are holding: {held}\nYou have grown: {grown}"
            )
            actions.append([f"Go to {o}" for o in scene if o != held] + ["Grasp", "Release"])
            choice = rng.integers(len(actions[-1]))
            action = actions[-1][choice]
            if action.startswith("Go to "):
                on = action[6:]
            elif action == "Grasp" and held == "nothing":
                held = on
            elif action == "Release":
                held = "nothing"
            if rng.random() < 0.05:
                grown = on
        picks = rng.choice(len(train), size=her_goals + 1, replace=False)
        yield Episode(
            goal=train[picks[0]],
            observations=observations,
            actions=actions,
            action_ids=rng.integers(0, [len(a) for a in actions[:T]]).astype(np.int64),
            rewards=np.zeros(T, dtype=np.float32),
            terminated=False,
            truncated=True,
            hindsight={train[p]: int(rng.integers(0, T)) for p in picks[1:]},
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capacity", type=int, default=100_000, help="transitions, env + HER")
    parser.add_argument("--source", choices=("env", "synthetic"), default="env")
    parser.add_argument(
        "--fill", type=float, default=1.5, help="transitions added, as a multiple of capacity"
    )
    parser.add_argument("--her-goals", type=int, default=5, help="hindsight goals per synthetic episode")
    parser.add_argument("--n-envs", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=50, help="batches timed per strategy")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    baseline = peak_rss_mib()
    prior = goal_type_prior("train")
    buf = ReplayBuffer(capacity=args.capacity, n_step=3, gamma=0.99, her=True, goal_type_prior=prior)
    source = (
        env_episodes(args.n_envs, args.seed)
        if args.source == "env"
        else synthetic_episodes(args.her_goals, args.seed)
    )
    added = n_episodes = n_hindsight = 0
    start = time.perf_counter()
    while added < args.fill * args.capacity:
        ep = next(source)
        buf.add_episode(ep)
        added += len(ep) + sum(t + 1 for _, t in hindsight_relabels(ep.goal, ep.hindsight, len(ep)))
        n_episodes += 1
        n_hindsight += len(ep.hindsight)
    fill_s = time.perf_counter() - start

    rng = np.random.default_rng(args.seed)
    timings = {}
    for name in ("uniform", "ratio", "prior"):
        buf.strategy = make_strategy(name, 0.5, prior)
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            buf.sample(args.batch_size, rng)
            times.append(time.perf_counter() - t0)
        timings[name] = 1e3 * float(np.median(times))
    state_mib = len(pickle.dumps(buf.state_dict(), protocol=pickle.HIGHEST_PROTOCOL)) / 2**20

    rows = [
        ("source", args.source),
        ("episodes added", f"{n_episodes} ({n_hindsight / n_episodes:.1f} hindsight goals each)"),
        ("stored transitions", f"{len(buf):,} / {args.capacity:,} ({buf.n_episodes} episodes)"),
        ("HER share", f"{buf.her_share():.3f}"),
        ("interned observations", f"{len(buf._observations):,}"),
        ("interned action lists", f"{len(buf._action_lists):,}"),
        ("fill seconds (incl. env)", f"{fill_s:.1f}"),
        ("RSS after imports (MiB)", f"{baseline:.0f}"),
        ("peak RSS (MiB)", f"{peak_rss_mib():.0f}"),
        ("state_dict pickle (MiB)", f"{state_mib:.1f}"),
        *((f"sample B={args.batch_size} {k} (ms)", f"{v:.2f}") for k, v in timings.items()),
    ]
    print_rows(rows)


if __name__ == "__main__":
    main()
