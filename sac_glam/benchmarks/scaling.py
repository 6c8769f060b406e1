"""``sac-glam bench scaling``: time of one SAC update vs batch size and objects per scene, and where it goes.

One update is what :class:`~sac_glam.run.learners.SACLearner` does per gradient step: ``buffer.sample``
(n-step returns, HER mix, prompts rendered) then :meth:`~sac_glam.algos.updaters.SACUpdater.update`
(next-state policy + target critic forward on the transitions that bootstrap, current-state actor +
critic forward, one backward of both losses, Adam, alpha step, Polyak update). The agent, updater and replay buffer are built from the
CPU default config (``sac_glam_her_cpu``, plus any ``key=value`` overrides) as ``train`` builds them,
and the buffer is filled with random-policy episodes of the vector env (HER copies included). Each
setting then times ``--updates`` updates after ``--warmup`` untimed ones, for two sweeps:

(a) batch sizes ``--batch-sizes`` (default 16 .. 256) at the config's N (3 objects);
(b) objects per scene ``--objects`` (default 3 6 9; N + 2 admissible actions, N + 1 while holding one)
    at ``--batch`` (default: the config's 64). N < 4 gets ``env.sequential_goals=false``.

Columns: ``actions/state`` = mean admissible actions of the sampled states; ``pairs/update`` =
(prompt, action) pairs of a batch's current and next states (each scored by the policy LLM and, with
``critic.share_llm=false``, by the critic LLM); ``ms/update`` = median ms of sample + gradient step,
``fastest`` its minimum, ``sampling`` the median ms of ``buffer.sample`` in it; ``us/transition`` and
``us/pair`` = the median per sampled transition and per pair; ``relative`` = the median over the sweep's
first row's. On a machine where another job holds one of 2 cores, 2 threads can be many times slower
than 1 (the OpenMP threads wait for each other): compare ``--threads 1``, and look at ``fastest``.

``--profile`` adds, at the config's batch size and N, the top operators by self CPU time under
``torch.profiler`` and a coarse split of the real ``SACUpdater.update`` into actor, critic, scoring glue,
backward parts, optimiser and the rest (``sac_glam/benchmarks/update_profile.py`` says how it is
measured). Run::

    sac-glam bench scaling                  # both sweeps, ~1 min on 2 idle cores
    sac-glam bench scaling --profile        # + profiler top operators and the coarse split
    sac-glam bench scaling --quick          # smoke run: 2 batch sizes, N = 3 and 6, 3 updates
    sac-glam bench scaling --batch-sizes 32 64 --objects 3 6 --updates 5 critic.n_critics=1
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any
from unittest import mock

import numpy as np
import torch

from sac_glam.algos.updaters import SACUpdater
from sac_glam.benchmarks import print_rows
from sac_glam.benchmarks.update_profile import coarse_split, profile_operators
from sac_glam.buffers.replay import ReplayBuffer, SACBatch
from sac_glam.config import Config
from sac_glam.helptext import plain
from sac_glam.run.configs import load_config

CONFIG = "sac_glam_her_cpu"
QUICK = {"batch_sizes": [16, 64], "objects": [3, 6], "updates": 3, "warmup": 1, "fill": 16}
QUICK_HELP = "a short run: --batch-sizes 16 64 --objects 3 6 --updates 3 --warmup 1 --fill 16"


def make_config(overrides: list[str], n_objects: int | None = None) -> Config:
    """The CPU default config with ``overrides``; ``n_objects`` (if given) with the goals it can hold."""
    extra = []
    if n_objects is not None:
        extra.append(f"env.n_objects={n_objects}")
        if n_objects < 4:  # sequential goals need 4 objects (the paper's N = 3 ablation has simple goals)
            extra.append("env.sequential_goals=false")
    cfg = load_config(CONFIG, [*overrides, *extra])
    if cfg.train.algo != "sac":
        raise SystemExit(f"bench scaling times SAC updates; the config has train.algo={cfg.train.algo!r}")
    return cfg


def fill_buffer(cfg: Config, vector_steps: int, seed: int) -> ReplayBuffer:
    """A replay buffer (with HER, as the config says) of random-policy episodes of the vector env.

    Episodes go through :meth:`SACLearner.record`, as in training; at least ``vector_steps`` steps of
    ``env.n_envs`` envs, and on until one episode has ended so that the buffer can be sampled.
    """
    from sac_glam.backends.base import ActOutput
    from sac_glam.envs.vector import PlaygroundTextVecEnv
    from sac_glam.run.factory import make_learner
    from sac_glam.run.learners import SACLearner

    learner = make_learner(cfg, np.random.default_rng([seed, 1]))
    assert isinstance(learner, SACLearner)
    envs = PlaygroundTextVecEnv(cfg.env, split="train", seed=seed)
    rng = np.random.default_rng(seed)
    unused = ActOutput(torch.zeros(0), torch.zeros(0, dtype=torch.bool), None)  # record ignores it
    obs = envs.reset()
    steps = 0
    while steps < vector_steps or len(learner.buffer) == 0:
        n_actions_E = np.fromiter(map(len, obs.actions), dtype=np.int64, count=envs.n_envs)
        ids_E = (rng.random(envs.n_envs) * n_actions_E).astype(np.int64)
        step = envs.step(ids_E)
        learner.record(obs, unused, ids_E, step)
        obs = step.obs
        steps += 1
    return learner.buffer


def n_pairs(batch: SACBatch) -> int:
    """(prompt, action) pairs an update scores: every admissible action of the current and next states."""
    return sum(map(len, batch.actions)) + sum(map(len, batch.next_actions))


@dataclass
class Row:
    batch: int
    n_objects: int
    actions_per_state: float
    pairs: float
    ms: float
    """Median ms per update (sample + gradient step)."""
    ms_min: float
    sample_ms: float
    """Median ms of ``buffer.sample`` alone (included in ``ms``)."""


def time_updates(
    updater: SACUpdater, buffer: ReplayBuffer, batch_size: int, n_objects: int, warmup: int, updates: int,
    rng: np.random.Generator,
) -> Row:  # fmt: skip
    """``warmup`` untimed then ``updates`` timed (sample + update) steps."""
    for _ in range(warmup):
        updater.update(buffer.sample(batch_size, rng))
    totals, samples, actions, pairs = [], [], [], []
    for _ in range(updates):
        t0 = time.perf_counter()
        batch = buffer.sample(batch_size, rng)
        t1 = time.perf_counter()
        updater.update(batch)
        t2 = time.perf_counter()
        totals.append(t2 - t0)
        samples.append(t1 - t0)
        actions.append(float(np.mean([len(a) for a in batch.actions])))
        pairs.append(n_pairs(batch))
    return Row(batch=batch_size, n_objects=n_objects, actions_per_state=float(np.mean(actions)),
               pairs=float(np.mean(pairs)), ms=1e3 * statistics.median(totals), ms_min=1e3 * min(totals),
               sample_ms=1e3 * statistics.median(samples))  # fmt: skip


HEADER = ("batch", "N", "actions/state", "pairs/update", "ms/update", "fastest", "sampling", "us/transition",
          "us/pair", "relative")  # fmt: skip


def print_table(title: str, rows: list[Row]) -> None:
    print(title)
    cells = [
        (f"{r.batch}", f"{r.n_objects}", f"{r.actions_per_state:.2f}", f"{r.pairs:.0f}", f"{r.ms:.1f}",
         f"{r.ms_min:.1f}", f"{r.sample_ms:.1f}", f"{1e3 * r.ms / r.batch:.0f}", f"{1e3 * r.ms / r.pairs:.1f}",
         f"{r.ms / rows[0].ms:.2f}")
        for r in rows
    ]  # fmt: skip
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(HEADER)]
    print("  ".join(h.rjust(w) for h, w in zip(HEADER, widths, strict=True)))
    for c in cells:
        print("  ".join(v.rjust(w) for v, w in zip(c, widths, strict=True)))
    print()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sac-glam bench scaling", description=plain(__doc__),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    parser.add_argument("--objects", type=int, nargs="+", default=[3, 6, 9], help="N of sweep (b)")
    parser.add_argument("--batch", type=int, default=None, help="batch of sweep (b) and --profile "
                        "(default: the config's sac.batch_size)")  # fmt: skip
    parser.add_argument("--updates", type=int, default=10, help="timed updates per setting")
    parser.add_argument("--warmup", type=int, default=2, help="untimed updates before them")
    parser.add_argument("--fill", type=int, default=64, help="random-policy vector steps filling a buffer")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true", help="profiler top operators and coarse split")
    parser.add_argument("--profile-updates", type=int, default=5, help="updates profiled and split")
    parser.add_argument("--quick", action="store_true", help=QUICK_HELP)
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the config")
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    if min(args.updates, args.profile_updates) < 1 or args.warmup < 0:
        parser.error("--updates and --profile-updates must be >= 1, --warmup >= 0")

    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        run(args)
    finally:
        torch.set_num_threads(threads)


def run(args: argparse.Namespace) -> None:
    from sac_glam.run.factory import make_agent, make_updater

    cfg = make_config(args.overrides)
    batch = args.batch or cfg.sac.batch_size
    agent = make_agent(cfg)
    updater = make_updater(cfg, agent)
    assert isinstance(updater, SACUpdater)
    rng = np.random.default_rng(args.seed)
    buffers: dict[int, ReplayBuffer] = {}

    def buffer_for(n_objects: int) -> ReplayBuffer:
        if n_objects not in buffers:
            buffers[n_objects] = fill_buffer(make_config(args.overrides, n_objects), args.fill, args.seed)
        return buffers[n_objects]

    n0 = cfg.env.n_objects
    env = f"N = {n0}" + ("" if cfg.env.sequential_goals else ", simple goals")
    text = not args.json
    if text:
        overrides = " " + " ".join(args.overrides) if args.overrides else ""
        print(f"One SAC update (buffer.sample + SACUpdater.update) of {CONFIG}{overrides}: {cfg.model.name}, "
              f"critic.share_llm={cfg.critic.share_llm}, n_critics={cfg.critic.n_critics}, {args.threads} "
              f"threads; median of {args.updates} updates after {args.warmup} warm-up\n", flush=True)  # fmt: skip
    sweep_a = [time_updates(updater, buffer_for(n0), b, n0, args.warmup, args.updates, rng)
               for b in args.batch_sizes]  # fmt: skip
    if text:
        print_table(f"(a) batch size, {env}", sweep_a)
    sweep_b = [time_updates(updater, buffer_for(n), batch, n, args.warmup, args.updates, rng)
               for n in args.objects]  # fmt: skip
    if text:
        goals = "simple goals" if not cfg.env.sequential_goals else "sequential goals for N >= 4"
        print_table(f"(b) objects per scene N, batch {batch}, {goals}", sweep_b)
    out: dict[str, Any] = {
        "batch_sizes": [asdict(r) for r in sweep_a],
        "objects": [asdict(r) for r in sweep_b],
    }
    if args.profile:
        if text:
            profile_operators(updater, buffer_for(n0), batch, args.profile_updates, rng)
        # Its parts are timed one after the other: the lanes of train.parallel_llms would overlap them.
        with mock.patch.object(agent, "lanes", None):
            split = coarse_split(updater, buffer_for(n0), batch, args.profile_updates, rng)
        out["split_ms"] = dict(split)
        if text:
            total = dict(split)["total (sample + update)"]
            print(f"Coarse split of one update, batch {batch}, {env}: median ms of {args.profile_updates} "
                  "updates with timing hooks (parts need not add up exactly)")  # fmt: skip
            print_rows([(label, f"{ms:8.2f} ms {ms / total:6.1%}") for label, ms in split])
    if args.json:
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
