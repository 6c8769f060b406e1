"""The typed configuration, the package's ground floor (it imports nothing else of ``sac_glam``).

- ``schema.py``: the keys, one dataclass per concern and one docstring per field;
- ``loading.py``: finding ``lamorel_configs/``, composing a config with hydra, saving and comparing configs;
- ``validation.py``: types, ranges and cross-field rules, each failure one :class:`ConfigError` line.

The checks that need the environment's goals or the model presets sit with those
(``envs/checks.py``, ``llm/models.py``); ``sac_glam.run.configs.load_config`` runs every check.
"""

from sac_glam.config.loading import (
    DEFAULT_CONFIG,
    WANDB_MISSING,
    available_configs,
    check_overrides,
    config_diff,
    config_dir,
    first_existing,
    flatten,
    from_raw,
    load_config,
    save_config,
    to_dict,
)
from sac_glam.config.schema import (
    BufferConfig,
    Config,
    CriticConfig,
    EnvConfig,
    ModelConfig,
    PPOConfig,
    SACConfig,
    TinyModelConfig,
    TrainConfig,
)
from sac_glam.config.validation import ConfigError, from_dict, validate

__all__ = [
    "DEFAULT_CONFIG",
    "WANDB_MISSING",
    "BufferConfig",
    "Config",
    "ConfigError",
    "CriticConfig",
    "EnvConfig",
    "ModelConfig",
    "PPOConfig",
    "SACConfig",
    "TinyModelConfig",
    "TrainConfig",
    "available_configs",
    "check_overrides",
    "config_diff",
    "config_dir",
    "first_existing",
    "flatten",
    "from_dict",
    "from_raw",
    "load_config",
    "save_config",
    "to_dict",
    "validate",
]
