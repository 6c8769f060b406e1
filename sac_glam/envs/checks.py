"""The config checks that need the goal grammar: each goal type exists, and a scene holds the objects of
every goal it can be given. Run on a loaded config (``sac_glam.run.configs.load_config``) so that a bad
value is a one-line :class:`~sac_glam.config.ConfigError` before anything is built; the configuration
itself cannot make them, since it sits below the environment."""

from __future__ import annotations

from sac_glam.config import Config, ConfigError
from sac_glam.envs.goals import ALL_OBJECTS, GOAL_TYPES
from sac_glam.envs.rules import sampling_goals


def check_config(cfg: Config) -> None:
    """``env.goal_types`` are goal types, and ``env.n_objects`` fits the train and evaluation goals."""
    for t in cfg.env.goal_types:
        if t not in GOAL_TYPES:
            raise ConfigError(f"env.goal_types: {t!r} is not a goal type; allowed: {', '.join(GOAL_TYPES)}")
    # The scene must hold every object a sampled goal needs (PlaygroundText's own rule).
    for split in dict.fromkeys(["train", *cfg.train.eval_splits]):
        try:
            _, need = sampling_goals(cfg.env, split)  # type: ignore[arg-type]
        except ValueError as err:
            raise ConfigError(f"env.goal_types: {err}") from err
        n = cfg.env.n_objects
        if not need <= n <= len(ALL_OBJECTS):
            hint = (
                "; grow-then-grow goals need 4, and env.sequential_goals=false drops them (the paper's "
                "N = 3 ablation)"
                if cfg.env.sequential_goals
                else "; grasp goals alone need 1 (env.goal_types=[grasp])"
            )
            raise ConfigError(
                f"env.n_objects: {n} is not allowed; the {split} goals of this config need {need} to "
                f"{len(ALL_OBJECTS)} objects per scene" + (hint if n < need else "")
            )
