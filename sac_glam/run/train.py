"""The training loop, top to bottom: envs -> prompts -> policy -> env step -> learner -> metrics.

``train(cfg)`` runs one (config, seed) in one run directory. Running it again on the same directory
resumes from the checkpoint: steps continue where they stopped, nothing is counted twice. SIGTERM and
SIGUSR1 (what SLURM sends before a time limit or a preemption) and SIGINT (Ctrl-C; a second one aborts
at once) save a checkpoint and exit with :data:`EXIT_PREEMPTED`. A directory that holds a run it cannot
resume is refused (:data:`EXIT_REFUSED`, ``train.restart=true`` moves it aside), and a checkpoint the
disk will not take stops the run (:data:`EXIT_CHECKPOINT_FAILED`) with the previous checkpoint intact
(docs/checkpoints.md).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from tqdm import tqdm

from sac_glam.algos import heap
from sac_glam.backends.base import Backend
from sac_glam.config import Config, TrainConfig, config_diff, save_config, to_dict
from sac_glam.envs.vector import PlaygroundTextVecEnv, VecObs
from sac_glam.run.checkpoint import (
    CheckpointWriteError,
    RunDirError,
    resume_or_start,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from sac_glam.run.evaluation import eval_seed as eval_seed_of
from sac_glam.run.evaluation import evaluate, sample_actions, success_by_type
from sac_glam.run.learners import Learner
from sac_glam.run.logging import MetricsLogger, ProgressBar, wandb_init_args
from sac_glam.run.signals import StopRequest

log = logging.getLogger(__name__)

#: Exit code after a SIGTERM/SIGUSR1/SIGINT checkpoint (EX_TEMPFAIL: "try again"): rerun the same command.
EXIT_PREEMPTED = 75
#: Exit code when the run directory holds a run that cannot be resumed (a usage error: nothing was run).
EXIT_REFUSED = 2
#: Exit code when a checkpoint cannot be written (EX_IOERR): the previous checkpoint is intact.
EXIT_CHECKPOINT_FAILED = 74

#: Keys that may differ between a checkpoint and the config resuming it (they do not change the run).
RESUMABLE_KEYS = (
    "train.total_steps",
    "train.time_limit_s",
    "train.progress",
    "train.tensorboard",
    "train.wandb",
    "train.wandb_mode",
    "train.wandb_project",
    "train.allow_config_change",
    "train.restart",
    "train.checkpoint_every",
    "train.threads",
    "train.parallel_llms",
    "train.run_dir",
)


class Preempted(SystemExit):
    """Raised after the checkpoint of a SIGTERM/SIGUSR1/SIGINT is written."""

    def __init__(self) -> None:
        super().__init__(EXIT_PREEMPTED)


class RunStopped(SystemExit):
    """The run stopped with one line on stderr and no traceback (``str()`` is that line)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(code)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _stop(message: str, code: int) -> NoReturn:
    tqdm.write(f"sac-glam: {message}", file=sys.stderr)  # tqdm.write: not glued to a progress bar
    raise RunStopped(message, code)


@dataclass
class LoopState:
    """Counters and statistics that a checkpoint must carry besides models, buffers and envs."""

    steps: int = 0
    grad_steps: int = 0
    episodes: int = 0
    next_log: int = 0
    next_eval: int = 0
    grad_steps_at_checkpoint: int = 0
    wall_s: float = 0.0
    timers: dict[str, float] = field(
        default_factory=lambda: {"act": 0.0, "env": 0.0, "learn": 0.0, "update": 0.0, "eval": 0.0}
    )
    recent: collections.deque[tuple[str, float, int]] = field(
        default_factory=lambda: collections.deque(maxlen=256)
    )
    pending_train_stats: list[dict[str, float]] = field(default_factory=list)
    last_log_step: int = -1
    last_eval: dict[str, float] = field(default_factory=dict)
    last_eval_step: int = -1

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the checkpoint (the deque becomes a list)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["recent"] = list(self.recent)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], log_window: int) -> LoopState:
        recent = collections.deque(data["recent"], maxlen=log_window)
        return cls(**{**data, "recent": recent})


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    success_rate: float
    """Success rate of the last ``log_window`` training episodes."""
    eval: dict[str, float]
    plot: Path | None
    wall_s: float = 0.0
    """The run's clock at the end (``time/wall_s``, summed over resumes; ``train.time_limit_s`` reads it)."""


class _SignalFlag(StopRequest):
    """SIGTERM/SIGUSR1/SIGINT as a flag the loop checks between iterations (never mid-update)."""

    ctrl_c_message = (b"\nCtrl-C: saving a checkpoint at the end of this iteration, "
                      b"then stopping (Ctrl-C again aborts without it)\n")  # fmt: skip


def run_dir_of(cfg: Config) -> Path:
    return Path(cfg.train.run_dir or f"runs/{cfg.name}/seed{cfg.train.seed}")


def train(cfg: Config, backend: Backend | None = None) -> TrainResult:
    """Train one (config, seed); resume from ``run_dir/checkpoint.pt`` when it exists."""
    from sac_glam.run.factory import make_backend, make_learner

    run_dir = run_dir_of(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    tc = cfg.train
    # Before building anything: a run directory that must be refused costs no model load.
    try:
        ckpt = resume_or_start(run_dir, tc.restart)
    except RunDirError as err:
        _stop(str(err), EXIT_REFUSED)
    diff = (
        config_diff(ckpt["config"], to_dict(cfg), ignore=RESUMABLE_KEYS, absent=to_dict(Config()))
        if ckpt is not None
        else {}
    )
    if diff and not tc.allow_config_change:
        _stop(f"{run_dir}/checkpoint.pt was written by a different config; differing keys: "
              + "; ".join(f"{k}: {a!r} (checkpoint) != {b!r} (now)" for k, (a, b) in diff.items())
              + ". Use another train.run_dir, or pass train.allow_config_change=true to resume anyway",
              EXIT_REFUSED)  # fmt: skip
    if tc.threads > 0:
        torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)
    rng = np.random.default_rng(tc.seed)

    backend = backend or make_backend(cfg)
    learner: Learner = make_learner(cfg, np.random.default_rng([tc.seed, 1]))
    envs = PlaygroundTextVecEnv(cfg.env, split="train", seed=tc.seed)
    state = LoopState(recent=collections.deque(maxlen=tc.log_window))

    if ckpt is not None:
        backend.load_state_dict(ckpt["backend"])
        learner.load_state_dict(ckpt["learner"])
        envs.load_state_dict(ckpt["envs"])
        obs = VecObs(**ckpt["obs"])
        state = LoopState.from_dict(ckpt["loop"], tc.log_window)
        set_rng_state(ckpt["rng"], rng)
        print(f"resuming {run_dir} at step {state.steps}", flush=True)
    else:
        obs = envs.reset()
    save_config(cfg, run_dir / "config.yaml")
    wandb_init = wandb_init_args(cfg, run_dir, resume=ckpt is not None) if tc.wandb else None
    logger = MetricsLogger(run_dir, tensorboard=tc.tensorboard, resume_step=state.steps if ckpt else None,
                           wandb_init=wandb_init)  # fmt: skip

    saved_step = state.steps if ckpt is not None else None

    def checkpoint() -> None:
        nonlocal saved_step
        try:
            save_checkpoint(run_dir, {
                "config": to_dict(cfg), "backend": backend.state_dict(), "learner": learner.state_dict(),
                "envs": envs.state_dict(), "obs": obs._asdict(), "loop": state.to_dict(), "rng": rng_state(rng),
            })  # fmt: skip
        except CheckpointWriteError as err:
            # Stop rather than train on unsaved (docs/checkpoints.md): the job frees its GPU at once,
            # at most one checkpoint interval is lost, and the same command resumes.
            last = "no checkpoint" if saved_step is None else f"the checkpoint of step {saved_step}"
            _stop(f"{err.strerror}. Training stopped at step {state.steps}; {last} is intact: free space or "
                  "fix the directory's permissions, then run the same command to resume", EXIT_CHECKPOINT_FAILED)  # fmt: skip
        saved_step = state.steps
        state.grad_steps_at_checkpoint = state.grad_steps

    eval_seed = eval_seed_of(cfg)
    bar = ProgressBar(tc.total_steps, state.steps, enabled=tc.progress, learning=state.grad_steps > 0)
    needs_value = getattr(learner, "needs_value", False)
    start = time.perf_counter() - state.wall_s
    with _SignalFlag() as flag:
        if ckpt is None:
            # A step-0 checkpoint: a run killed before its first scheduled one resumes (from 0) instead
            # of being refused for holding metrics without a checkpoint.
            checkpoint()
        while state.steps < tc.total_steps and not _out_of_time(tc, state):
            t0 = time.perf_counter()
            act = backend.act(obs.prompts, obs.actions, value=needs_value)
            action_ids = sample_actions(act, rng)
            t1 = time.perf_counter()
            step = envs.step(action_ids)
            t2 = time.perf_counter()
            learner.record(obs, act, action_ids, step)
            for end in step.ends:
                if end is not None:
                    state.recent.append((end.goal_type, float(end.success), end.length))
                    state.episodes += 1
            obs = step.obs
            state.steps += envs.n_envs
            t3 = time.perf_counter()
            if learner.ready(state.steps):
                stats = learner.update(backend, obs, state.steps)
                state.grad_steps += len(stats)
                state.pending_train_stats += stats
            t4 = time.perf_counter()
            for key, dt in (("act", t1 - t0), ("env", t2 - t1), ("learn", t3 - t2), ("update", t4 - t3)):
                state.timers[key] += dt
            state.wall_s = time.perf_counter() - start
            bar.update(envs.n_envs, state.episodes, state.recent, learning=state.grad_steps > 0)

            if state.steps >= state.next_log:
                state.next_log += tc.log_every
                _log_progress(logger, state, learner)
                heap.trim()  # RSS must not creep from the allocator's free chunks (sac_glam/algos/heap.py)
            if tc.eval_every > 0 and state.steps >= state.next_eval:
                state.next_eval += tc.eval_every
                bar.evaluated(_log_eval(logger, backend, cfg, state, eval_seed))
            if (
                tc.checkpoint_every > 0
                and state.grad_steps - state.grad_steps_at_checkpoint >= tc.checkpoint_every
            ):
                checkpoint()
            if flag.received is not None:
                checkpoint()
                bar.close()
                logger.close()
                print(f"{signal.Signals(flag.received).name}: checkpoint saved at step {state.steps} in {run_dir}; "
                      f"run the same command to resume (exit {EXIT_PREEMPTED})", flush=True)  # fmt: skip
                raise Preempted()
    if _out_of_time(tc, state) and state.steps < tc.total_steps:
        tqdm.write(f"train.time_limit_s={tc.time_limit_s:g} reached at step {state.steps} "
                   f"({state.wall_s:.0f} s): final evaluation", file=sys.stderr)  # fmt: skip
    # The final step gets one progress record and one evaluation, whether or not the schedule just
    # produced them (a step must not appear twice with different numbers).
    if state.last_log_step != state.steps:
        _log_progress(logger, state, learner)
    final_eval = state.last_eval
    if state.last_eval_step != state.steps:
        final_eval = _log_eval(logger, backend, cfg, state, eval_seed)
    bar.evaluated(final_eval)
    bar.close()  # the one final line, with the final evaluation's success
    checkpoint()
    backend.save_pretrained(run_dir / "final")
    logger.close()
    from sac_glam.run.plot import plot_run

    plot = plot_run(run_dir)
    rollout = success_by_type(list(state.recent))
    result = TrainResult(run_dir, state.steps, rollout.get("success_rate", float("nan")), final_eval, plot,
                         state.wall_s)  # fmt: skip
    record = {**dataclasses.asdict(result), "run_dir": str(run_dir), "plot": str(plot) if plot else None}
    # null where a figure does not exist (no training episode ended in a short run): NaN is not JSON,
    # and strict readers (jq, JavaScript, json.loads with parse_constant) refuse the file.
    (run_dir / "result.json").write_text(json.dumps(_null_if_not_finite(record), indent=2, allow_nan=False))
    return result


def _out_of_time(tc: TrainConfig, state: LoopState) -> bool:
    return tc.time_limit_s > 0 and state.wall_s >= tc.time_limit_s


def _null_if_not_finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _null_if_not_finite(v) for k, v in obj.items()}
    return obj


def _log_progress(logger: MetricsLogger, state: LoopState, learner: Learner) -> None:
    metrics: dict[str, float] = {f"rollout/{k}": v for k, v in success_by_type(list(state.recent)).items()}
    if state.pending_train_stats:
        keys = {k for s in state.pending_train_stats for k in s}
        for k in sorted(keys):
            vals = [s[k] for s in state.pending_train_stats if k in s and np.isfinite(s[k])]
            if vals:
                metrics[k] = float(np.mean(vals))
        state.pending_train_stats = []
    metrics.update(learner.metrics())
    metrics["train/grad_steps"] = state.grad_steps
    metrics["rollout/episodes"] = state.episodes
    metrics["time/wall_s"] = state.wall_s
    metrics["time/steps_per_s"] = state.steps / max(state.wall_s, 1e-9)
    for key, total in state.timers.items():
        metrics[f"time/{key}_s"] = total
    logger.log(state.steps, metrics)
    state.last_log_step = state.steps


def _log_eval(
    logger: MetricsLogger, backend: Backend, cfg: Config, state: LoopState, seed: int
) -> dict[str, float]:
    t0 = time.perf_counter()
    out: dict[str, float] = {}
    for split in cfg.train.eval_splits:
        for k, v in evaluate(backend, cfg, split, seed).items():
            out[f"eval/{split}/{k}"] = v
    state.timers["eval"] += time.perf_counter() - t0
    if out:
        logger.log(state.steps, out)
    state.last_eval, state.last_eval_step = out, state.steps
    return out
