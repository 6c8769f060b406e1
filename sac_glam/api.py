"""The Python API, beside the command line: train a run, load what it trained, act and evaluate.

    from sac_glam import load_agent, train
    from sac_glam.envs import PlaygroundText

    result = train("sac_glam_her_cpu", ["train.total_steps=2048"])  # = sac-glam train ... (same run dir)
    agent = load_agent(result.run_dir)                               # final/ (or the newest checkpoint)
    env = PlaygroundText(agent.config.env, split="test")
    obs, info = env.reset(seed=0)
    action = agent.act(env.prompt, info["admissible_actions"])       # argmax of pi (greedy=False samples)
    agent.evaluate(episodes=64, split="test")                        # eval/test/... as the run logs it

:func:`train` runs in this process with the ``local`` backend (``train.backend=lamorel`` needs Lamorel's
launcher: ``lamorel-launch``) and resumes a run directory that holds a checkpoint, as the command does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from omegaconf import OmegaConf

from sac_glam.config import DEFAULT_CONFIG, Config, ConfigError, check_overrides, from_raw, to_dict
from sac_glam.llm.agent import LLMAgent
from sac_glam.run.configs import check_config, default_run_dir, resolve
from sac_glam.run.evaluation import eval_seed
from sac_glam.run.train import TrainResult
from sac_glam.run.train import train as train_run
from sac_glam.run.trained import TrainedRun, evaluate_run, load_run

__all__ = ["Agent", "TrainResult", "load_agent", "make_config", "train"]


def make_config(
    config: Config | str = DEFAULT_CONFIG,
    overrides: Sequence[str] = (),
    config_path: str | Path | None = None,
) -> Config:
    """A checked config: a config file of ``lamorel_configs/`` (or ``config_path``) by name, or a
    :class:`Config` object, with ``key=value`` ``overrides``; ``train.run_dir`` filled as ``sac-glam train``
    fills it (``runs/{name}/{overrides}/seed{seed}``). Raises :class:`ConfigError` (one line)."""
    if isinstance(config, str):
        return resolve(config, overrides, None if config_path is None else str(config_path))
    check_overrides(overrides)
    merged = OmegaConf.merge(to_dict(config), OmegaConf.from_dotlist([o.lstrip("+") for o in overrides]))
    cfg = from_raw(OmegaConf.to_container(merged))  # type: ignore[arg-type]
    check_config(cfg)
    if not cfg.train.run_dir:
        cfg = replace(cfg, train=replace(cfg.train, run_dir=str(default_run_dir(cfg, overrides))))
    return cfg


def train(
    config: Config | str = DEFAULT_CONFIG,
    overrides: Sequence[str] = (),
    config_path: str | Path | None = None,
) -> TrainResult:
    """Train one run in this process (:func:`make_config` reads the arguments) and return its result:
    ``run_dir``, ``steps``, the last training episodes' ``success_rate``, the last ``eval`` metrics and
    the ``plot``. A run directory with a checkpoint is resumed."""
    cfg = make_config(config, overrides, config_path)
    if cfg.train.backend != "local":
        raise ConfigError(
            f"train.backend={cfg.train.backend}: the Python API trains in this process (train.backend=local); "
            "a Lamorel run needs Lamorel's launcher: lamorel-launch --config-name ..."
        )
    return train_run(cfg)


@dataclass
class Agent:
    """A trained agent: its run's config and the policy it learned (the LLM and its heads)."""

    config: Config
    llm_agent: LLMAgent
    source: str
    """What the weights came from: ``final/`` or the checkpoint's file name."""
    steps: int | None
    """The environment steps it was trained for (None when unknown)."""

    def policy(self, prompt: str, actions: Sequence[str]) -> dict[str, float]:
        """pi(a | prompt) over the admissible ``actions`` (the paper's eq. 1-2: softmax of each action's
        summed token log-probs), as the run acted."""
        with torch.no_grad():
            out = self.llm_agent.evaluate([prompt], [list(actions)])
        pi_A = out.log_pi_BA[0, : len(actions)].exp().tolist()
        return dict(zip(actions, pi_A, strict=True))

    def act(
        self, prompt: str, actions: Sequence[str], greedy: bool = True, rng: np.random.Generator | None = None
    ) -> str:
        """One of ``actions`` for ``prompt`` (``PlaygroundText.prompt``): the most probable under pi, or a
        sample from pi with ``greedy=False`` (``rng``, default unseeded)."""
        pi = self.policy(prompt, actions)
        if greedy:
            return max(pi, key=pi.__getitem__)
        p_A = np.array(list(pi.values()), dtype=np.float64)
        rng = rng or np.random.default_rng()
        return list(pi)[int(rng.choice(len(p_A), p=p_A / p_A.sum()))]

    def evaluate(
        self,
        episodes: int | None = None,
        split: Literal["train", "test"] = "train",
        greedy: bool | None = None,
        seed: int | None = None,
    ) -> dict[str, float]:
        """``eval/{split}/...`` metrics (success rate, overall and per goal type; episode length) on
        ``episodes`` seeded episodes, the run's evaluation protocol: its ``train.eval_episodes``,
        ``train.eval_greedy`` and evaluation seed unless given, so the defaults repeat its last
        evaluation (``sac-glam eval RUN_DIR``)."""
        tc = self.config.train
        return evaluate_run(
            TrainedRun(self.config, self.llm_agent, self.source, self.steps),
            [split],
            tc.eval_episodes if episodes is None else episodes,
            eval_seed(self.config) if seed is None else seed,
            tc.eval_greedy if greedy is None else greedy,
        )


def load_agent(
    run_dir: str | Path,
    source: Literal["auto", "final", "checkpoint"] = "auto",
    device: str | None = None,
) -> Agent:
    """The agent a run trained: from ``run_dir/final/`` or its newest checkpoint (``auto``: the newer),
    on ``device`` (default: the run's ``train.device``). Raises :class:`ConfigError` (one line) when
    ``run_dir`` is not a run or holds no weights."""
    run = load_run(run_dir, source, device)
    return Agent(run.cfg, run.agent, run.source, run.steps)
