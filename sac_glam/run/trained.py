"""``sac-glam eval RUN_DIR``: load what a run trained and evaluate it, or watch it play.

    sac-glam eval runs/sac_glam_her_cpu/seed0                        # success per split and goal type
    sac-glam eval runs/sac_glam_her_cpu/seed0 --episodes 512 --split test
    sac-glam eval runs/sac_glam_her_cpu/seed0 --show                 # one episode: prompts, pi, Q

The run's agent (the LLM or its LoRA adapters, the Q heads, the value head) is built from the run's
``config.yaml`` and loaded from ``final/`` (a finished run) or from its newest checkpoint (a run that
stopped or is still going), whichever is newer; a run of either backend (the checkpoint and ``final/``
hold the same agent state). The episodes are the training loop's own evaluation
(:func:`sac_glam.run.evaluation.evaluate`): by default the run's ``train.eval_episodes``, its goal splits, its
evaluation seed and its sampling (``train.eval_greedy``), so that a finished run's numbers are those of
its last ``eval/`` record; ``--episodes``, ``--split``, ``--seed`` and ``--greedy`` change them.

``--show`` plays one episode and prints, at each step, the prompt the LLM reads, the policy's most
likely actions with their probabilities and the critic's values (Q(s, a), the minimum over the critics,
for SAC; V(s) for PPO), and the action taken.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import yaml

from sac_glam.backends.base import ActOutput
from sac_glam.config import Config, ConfigError, from_raw
from sac_glam.envs.goals import GOAL_TYPES
from sac_glam.envs.vector import EpisodeEnd
from sac_glam.helptext import plain
from sac_glam.llm.agent import LLMAgent
from sac_glam.run.checkpoint import CHECKPOINT, PREVIOUS, load_checkpoint
from sac_glam.run.evaluation import EpisodeHook, eval_seed, evaluate, play_episodes

FINAL = "final"


@dataclass
class TrainedRun:
    """A run directory's config and its agent, loaded."""

    cfg: Config
    agent: LLMAgent
    source: str
    """What the weights came from: ``final/`` or the checkpoint's file name."""
    steps: int | None
    """The environment steps the agent was trained for (None when ``final/`` has no result.json)."""


def _newer_source(run_dir: Path) -> Literal["final", "checkpoint"] | None:
    final = run_dir / FINAL / "heads.safetensors"  # written last by LLMAgent.save
    ckpts = [run_dir / name for name in (CHECKPOINT, PREVIOUS) if (run_dir / name).exists()]
    if final.exists() and (not ckpts or final.stat().st_mtime >= max(p.stat().st_mtime for p in ckpts)):
        return "final"  # a finished run writes its last checkpoint, then final/
    return "checkpoint" if ckpts else None


def load_run(run_dir: str | Path, source: Literal["auto", "final", "checkpoint"] = "auto",
             device: str | None = None) -> TrainedRun:  # fmt: skip
    """The agent of ``run_dir``, from ``final/`` or the newest readable checkpoint (``auto``: the newer).

    ``device`` replaces the run's ``train.device`` (a GPU run evaluated on a CPU). :class:`ConfigError`
    (one line) when the directory is not a run or holds no weights.
    """
    from sac_glam.run.factory import make_agent

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir}/config.yaml not found: not a run directory (train.run_dir of a run)")
    cfg = from_raw(yaml.safe_load((run_dir / "config.yaml").read_text()))
    if device is not None:
        cfg = replace(cfg, train=replace(cfg.train, device=device))  # type: ignore[arg-type]
    chosen = _newer_source(run_dir) if source == "auto" else source
    if chosen is None:
        raise ConfigError(f"{run_dir} holds neither {FINAL}/ nor a checkpoint: nothing was trained there yet")
    agent = make_agent(cfg)
    steps: int | None
    if chosen == "final":
        agent.load(run_dir / FINAL)
        result = run_dir / "result.json"
        steps = int(json.loads(result.read_text())["steps"]) if result.is_file() else None
        where = f"{FINAL}/"
    else:
        ckpt = load_checkpoint(run_dir)
        if ckpt is None:
            raise ConfigError(f"{run_dir} has no readable checkpoint")
        agent.load_trainable_state_dict(ckpt["backend"]["agent"])
        steps, where = int(ckpt["loop"]["steps"]), CHECKPOINT
    agent.eval()
    return TrainedRun(cfg, agent, where, steps)


class AgentPolicy:
    """What :func:`~sac_glam.run.evaluation.play_episodes` acts with: the agent's pi, no gradients."""

    def __init__(self, agent: LLMAgent):
        self.agent = agent

    def act(self, prompts: list[str], actions: list[list[str]]) -> ActOutput:
        with torch.no_grad():
            out = self.agent.evaluate(prompts, actions)
        return ActOutput(out.log_pi_BA, out.mask_BA, None)


class ShowingPolicy(AgentPolicy, EpisodeHook):
    """Plays through the agent and prints each state: the prompt, the ``top`` actions by pi with the
    critic's values, then the action taken and how the episode ended."""

    def __init__(self, agent: LLMAgent, algo: str, top: int):
        super().__init__(agent)
        self.algo, self.top, self.step = algo, top, 0
        self._actions: list[str] = []

    def act(self, prompts: list[str], actions: list[list[str]]) -> ActOutput:
        sac = self.algo == "sac"
        with torch.no_grad():
            out = self.agent.evaluate(prompts, actions, q=sac, v=not sac)
        self.step, self._actions = self.step + 1, actions[0]
        n = len(actions[0])
        pi_A = out.log_pi_BA[0, :n].exp()
        print(f"step {self.step}")
        print("".join(f"  | {line}\n" for line in prompts[0].split("\n")), end="")
        q_A = None
        if out.q_KBA is not None:  # the minimum over the K critics, as the critic's target takes it
            q_A = out.q_KBA[:, 0, :n].min(0).values
            k = out.q_KBA.shape[0]
            print(f"  {'pi':>6}  {'Q' if k == 1 else f'min Q ({k})':>9}  action")
        elif out.v_B is not None:
            print(f"  V(s) = {float(out.v_B[0]):.3f}\n  {'pi':>6}  action")
        top_A = pi_A.argsort(descending=True)[: self.top]
        for i in top_A.tolist():
            q = "" if q_A is None else f"  {float(q_A[i]):>9.3f}"
            print(f"  {float(pi_A[i]):>6.3f}{q}  {actions[0][i]}")
        if n > len(top_A):
            print(f"  ... {n - len(top_A)} more actions, pi {float(pi_A.sum() - pi_A[top_A].sum()):.3f}")
        return ActOutput(out.log_pi_BA, out.mask_BA, None)

    def acting(self, action_ids: np.ndarray) -> None:
        print(f"  -> {self._actions[int(action_ids[0])]}")

    def ended(self, env: int, end: EpisodeEnd, counted: bool) -> None:
        if counted:
            outcome = "success" if end.success else ("truncated" if end.truncated else "failure")
            print(
                f"episode end: {outcome} after {end.length} steps (goal: {end.goal}, a {end.goal_type} goal)"
            )


def evaluate_run(
    run: TrainedRun, splits: Sequence[str], episodes: int, seed: int, greedy: bool
) -> dict[str, float]:
    """``eval/{split}/...`` metrics of the loaded agent, as the training loop's evaluation logs them."""
    cfg = replace(run.cfg, train=replace(run.cfg.train, eval_episodes=episodes, eval_greedy=greedy))
    policy = AgentPolicy(run.agent)
    return {f"eval/{split}/{k}": v for split in splits for k, v in evaluate(policy, cfg, split, seed).items()}


def _table(metrics: dict[str, float], splits: Sequence[str]) -> str:
    rows = [f"  {'split':<5}  {'goal type':<15}  {'success':>7}  {'episode length':>14}"]
    for split in splits:
        prefix = f"eval/{split}/"
        rows.append(f"  {split:<5}  {'all':<15}  {metrics[prefix + 'success_rate']:>7.3f}  "
                    f"{metrics[prefix + 'episode_length']:>14.2f}")  # fmt: skip
        for goal_type in GOAL_TYPES:
            key = f"{prefix}success_rate/{goal_type}"
            if key in metrics:
                rows.append(f"  {split:<5}  {goal_type:<15}  {metrics[key]:>7.3f}")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sac-glam eval", description=plain(__doc__),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("run_dir", type=Path, help="a run directory (train.run_dir)")
    parser.add_argument(
        "--episodes", type=int, help="episodes per split (default: the run's train.eval_episodes)"
    )
    parser.add_argument("--split", action="append", choices=["train", "test"],
                        help="goal split, repeatable (default: the run's train.eval_splits)")  # fmt: skip
    parser.add_argument("--seed", type=int, help="episodes' seed (default: the run's evaluation seed)")
    parser.add_argument(
        "--greedy", action="store_true", help="take pi's argmax (default: the run's train.eval_greedy)"
    )
    parser.add_argument("--from", dest="source", choices=["auto", "final", "checkpoint"], default="auto",
                        help="load final/ or the checkpoint (default: the newer)")  # fmt: skip
    parser.add_argument(
        "--show", action="store_true", help="play one episode, printing prompts, pi and the critic"
    )
    parser.add_argument("--top", type=int, default=5, help="actions shown per step with --show")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="replace the run's train.device")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", type=Path, help="also write the metrics to this JSON file")
    args = parser.parse_args(argv)
    if (args.episodes is not None and args.episodes < 1) or args.top < 1 or args.threads < 0:
        parser.error("--episodes and --top must be >= 1, --threads >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        run = load_run(args.run_dir, args.source, args.device)
    except (ConfigError, OSError, ValueError) as err:
        print(f"sac-glam eval: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    tc = run.cfg.train
    splits = args.split or tc.eval_splits
    seed = eval_seed(run.cfg) if args.seed is None else args.seed
    greedy = args.greedy or tc.eval_greedy
    steps = "?" if run.steps is None else f"{run.steps:,}"
    print(f"{args.run_dir}: {tc.algo} on {run.cfg.model.name}, {run.source} (step {steps})")
    if args.show:
        split = splits[0] if splits else "train"
        show = ShowingPolicy(run.agent, tc.algo, args.top)
        print(f"one {split} episode, seed {seed}, {'argmax of pi' if greedy else 'sampled from pi'}:")
        play_episodes(show, replace(run.cfg.env, n_envs=1), split, 1, seed, greedy, hook=show)  # type: ignore[arg-type]
        return 0
    episodes = args.episodes or tc.eval_episodes
    print(f"{episodes} episodes per split, {'argmax of pi' if greedy else 'sampled from pi'}, seed {seed}"
          + (", stratified by goal type (train.eval_by_type)" if tc.eval_by_type else ""))  # fmt: skip
    metrics = evaluate_run(run, splits, episodes, seed, greedy)
    print(_table(metrics, splits))
    if args.json is not None:
        record = {"run_dir": str(args.run_dir), "source": run.source, "steps": run.steps, "episodes": episodes,
                  "seed": seed, "greedy": greedy, **metrics}  # fmt: skip
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
