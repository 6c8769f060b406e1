"""Config validation: plain data into the typed dataclasses of ``sac_glam/config.py``, then range and
cross-field rules.

:func:`from_dict` checks each value against its field's type (unknown keys, wrong types, values outside a
``Literal``); :func:`validate` checks what the types cannot say (ranges, one key needing another, and
what the environment or the model would refuse only once a run had started). Every failure is one
:class:`ConfigError` line naming the dotted key, the value and what is allowed. Kept apart from the
dataclasses so that ``config.py`` reads as the list of keys, and from the loading so that a saved
``config.yaml`` (``from_raw``) and a composed one go through the same checks without hydra.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:
    from sac_glam.config import Config

T = TypeVar("T")


class ConfigError(ValueError):
    """A config key, type or value that is not allowed."""


def _check(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, key + ".")
    if origin is Literal:
        if value not in typing.get_args(tp):
            allowed = ", ".join(repr(a) for a in typing.get_args(tp))
            raise ConfigError(f"{key}: {value!r} is not allowed; allowed values: {allowed}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _check(arg, value, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError("; ".join(errors))
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (elem,) = typing.get_args(tp)
        return [_check(elem, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is Any:
        if origin is dict and not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return value
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str and not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types are :class:`ConfigError`."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(
            f"unknown key {prefix}{unknown[0]}; allowed keys{' of ' + prefix.rstrip('.') if prefix else ''}: "
            + ", ".join(names)
        )
    return cls(**{k: _check(hints[k], v, prefix + k) for k, v in data.items()})


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(cfg: Config) -> None:
    """Cross-field and range checks that the types alone cannot express."""
    from sac_glam.envs.goals import GOAL_TYPES

    for key in ("env.n_objects", "env.max_steps", "env.n_envs", "sac.batch_size", "sac.update_every",
                "sac.n_updates", "sac.chunk_size", "buffer.capacity", "buffer.n_step", "ppo.n_steps",
                "ppo.epochs", "ppo.batch_size", "ppo.chunk_size", "train.eval_episodes", "train.log_every",
                "train.log_window", "critic.width", "critic.n_critics", "model.minibatch_size"):  # fmt: skip
        section, attr = key.split(".")
        value = getattr(getattr(cfg, section), attr)
        _require(value >= 1, f"{key}: must be >= 1, got {value}")
    for key in ("sac.gamma", "ppo.gamma", "critic.tau", "ppo.gae_lambda"):
        section, attr = key.split(".")
        value = getattr(getattr(cfg, section), attr)
        _require(0.0 < value <= 1.0, f"{key}: must be in (0, 1], got {value}")
    _require(
        0.0 <= cfg.buffer.her_ratio <= 1.0, f"buffer.her_ratio: must be in [0, 1], got {cfg.buffer.her_ratio}"
    )
    _require(cfg.sac.alpha_init > 0, f"sac.alpha_init: must be > 0, got {cfg.sac.alpha_init}")
    tiny = cfg.model.tiny
    _require(tiny.pretrain_steps >= 0, f"model.tiny.pretrain_steps: must be >= 0, got {tiny.pretrain_steps}")
    for attr in ("pretrain_corpus", "pretrain_batch"):
        _require(getattr(tiny, attr) >= 1, f"model.tiny.{attr}: must be >= 1, got {getattr(tiny, attr)}")
    _require(tiny.pretrain_lr > 0, f"model.tiny.pretrain_lr: must be > 0, got {tiny.pretrain_lr}")
    for t in cfg.env.goal_types:
        _require(
            t in GOAL_TYPES, f"env.goal_types: {t!r} is not a goal type; allowed: {', '.join(GOAL_TYPES)}"
        )
    if not cfg.env.sequential_goals:
        seq = [t for t in cfg.env.goal_types if t.startswith("grow_then")]
        _require(not seq, f"env.goal_types: {seq} need env.sequential_goals=true")
    for split in cfg.train.eval_splits:
        _require(
            split in ("train", "test"),
            f"train.eval_splits: {split!r} is not allowed; allowed: 'train', 'test'",
        )
    _require(
        not cfg.model.load_in_4bit or cfg.model.lora,
        "model.load_in_4bit=true needs model.lora=true (4-bit weights cannot be trained)",
    )
    _require(
        cfg.critic.target != "adapter" or cfg.model.lora,
        "critic.target='adapter' needs model.lora=true (the target copies the LoRA adapter)",
    )
    _require(
        cfg.train.algo == "sac" or not cfg.buffer.her,
        "buffer.her=true needs train.algo='sac' (PPO is on-policy: no replay to relabel)",
    )
    _require(
        cfg.buffer.capacity >= cfg.sac.batch_size,
        f"buffer.capacity ({cfg.buffer.capacity}) must be >= sac.batch_size ({cfg.sac.batch_size})",
    )
    _validate_parts(cfg)


def _validate_parts(cfg: Config) -> None:
    """What the environment and the model would refuse only once a run had started building them:
    checked here so that a bad value is a one-line config error before anything is loaded."""
    from sac_glam.envs.goals import ALL_OBJECTS
    from sac_glam.envs.rules import sampling_goals

    tiny = cfg.model.tiny
    for attr in ("d_model", "n_layers", "n_heads", "d_ff"):
        _require(getattr(tiny, attr) >= 1, f"model.tiny.{attr}: must be >= 1, got {getattr(tiny, attr)}")
    is_tiny = cfg.model.name.startswith("tiny-")
    _require(
        not is_tiny or tiny.d_model % tiny.n_heads == 0,
        f"model.tiny.d_model ({tiny.d_model}) must be divisible by model.tiny.n_heads ({tiny.n_heads})",
    )
    if is_tiny and cfg.model.family != "auto":
        from sac_glam.llm.models import TINY_PRESETS  # transformers: imported only on this rare path

        preset = TINY_PRESETS.get(cfg.model.name, cfg.model.family)
        _require(
            preset == cfg.model.family,
            f"model.family={cfg.model.family!r} contradicts model.name={cfg.model.name!r} ({preset}); "
            "use model.family=auto",
        )
    _require(
        cfg.critic.target != "adapter" or cfg.critic.share_llm,
        "critic.target='adapter' needs critic.share_llm=true (it copies the shared adapter)",
    )
    _require(
        cfg.critic.target != "network" or not cfg.critic.share_llm,
        "critic.target='network' needs critic.share_llm=false (it copies the critic's own LLM; "
        "with a shared LLM use 'adapter')",
    )
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
