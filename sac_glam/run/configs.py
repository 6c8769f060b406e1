"""A run's config with every check: the configuration's own (types, ranges, cross-field rules), then
those that need the environment's goal grammar and the model presets, which sit with them
(``sac_glam/envs/checks.py``, ``sac_glam/llm/models.py``) because the configuration is below both.
Every command loads its config here, so that a bad value is one line before anything is built."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from pathlib import Path

from sac_glam import config
from sac_glam.config import Config
from sac_glam.envs import checks as env_checks


def check_config(cfg: Config) -> None:
    """The environment's and the model's checks of a config that passed its own (raises ConfigError)."""
    env_checks.check_config(cfg)
    if cfg.model.family != "auto":  # else nothing to check, and transformers stays unimported
        from sac_glam.llm.models import check_config as check_model

        check_model(cfg.model)


def load_config(
    name: str = config.DEFAULT_CONFIG, overrides: Sequence[str] = (), directory: str | Path | None = None
) -> Config:
    """:func:`sac_glam.config.load_config` (``name``, hydra ``overrides``, the configs' folder), checked
    against the environment and the model too."""
    cfg = config.load_config(name, overrides, directory)
    check_config(cfg)
    return cfg


#: Overrides that do not name a different run (how it is shown, logged, checkpointed, threaded, or
#: resumed; run/train.py's RESUMABLE_KEYS but the budget), left out of the default run directory's name.
RUN_DIR_IGNORED = frozenset({"name", "train.seed", "train.run_dir", "train.progress", "train.tensorboard",
                             "train.wandb", "train.wandb_mode", "train.wandb_project", "train.allow_config_change",
                             "train.restart", "train.checkpoint_every", "train.threads",
                             "train.parallel_llms"})  # fmt: skip
#: A longer override part of the run directory is cut, and a hash of the whole keeps it apart.
RUN_DIR_PART_MAX = 96


def default_run_dir(cfg: Config, overrides: Sequence[str]) -> Path:
    """The run directory when ``train.run_dir`` is not set: ``runs/{name}/seed{seed}`` for a config as it
    is, ``runs/{name}/{overrides}/seed{seed}`` with overrides, hydra's ``override_dirname`` (sorted
    ``key=value`` joined by commas, ``/`` as ``_``) without :data:`RUN_DIR_IGNORED`. So the same command
    resumes its run, and a trial (``train.total_steps=2048``) is not resumed by the default command."""
    given = {o.lstrip("+").split("=", 1)[0]: o.lstrip("+") for o in overrides if "=" in o}
    part = ",".join(given[k] for k in sorted(given) if k not in RUN_DIR_IGNORED).replace("/", "_")
    if len(part) > RUN_DIR_PART_MAX:
        part = f"{part[: RUN_DIR_PART_MAX - 9]}-{hashlib.sha256(part.encode()).hexdigest()[:8]}"
    return Path("runs", cfg.name, *([part] if part else []), f"seed{cfg.train.seed}")


def resolve(config_name: str, overrides: Sequence[str], config_path: str | None) -> Config:
    """The config of a command line, its run directory filled (:func:`default_run_dir` when not given)."""
    cfg = load_config(config_name, overrides, config_path)
    if not cfg.train.run_dir:
        run_dir = str(default_run_dir(cfg, overrides))
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, run_dir=run_dir))
    return cfg
