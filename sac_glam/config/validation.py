"""Config validation: plain data into the typed dataclasses of ``sac_glam/config/schema.py``, then range and
cross-field rules.

:func:`from_dict` checks each value against its field's type (unknown keys, wrong types, values outside a
``Literal``); :func:`validate` checks what the types cannot say (ranges, one key needing another). Every
failure is one :class:`ConfigError` line naming the dotted key, the value and what is allowed. Kept
apart from the dataclasses so that ``schema.py`` reads as the list of keys, and from the loading so that
a saved ``config.yaml`` (``from_raw``) and a composed one go through the same checks without hydra.

The configuration is the package's ground floor: it imports nothing else of ``sac_glam``. The checks
that need the environment's goal grammar (``env.goal_types``, ``env.n_objects``) live in
``sac_glam/envs/checks.py`` and the model presets' in ``sac_glam/llm/models.py``;
``sac_glam.run.configs.load_config``, which every command uses, runs them after these.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:
    from sac_glam.config.schema import Config

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


@dataclasses.dataclass(frozen=True)
class Range:
    """The numbers a key allows: from ``low`` to ``high`` (None: unbounded), each bound included unless
    ``*_open``. ``str()`` is what the error says is allowed: ``>= 1``, ``> 0``, ``in (0, 1]``."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def allows(self, value: float) -> bool:
        # Written as "not outside" would let NaN through: every comparison with NaN is False.
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return (
            f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        )


AT_LEAST_1, AT_LEAST_0, POSITIVE = Range(1), Range(0), Range(0, low_open=True)
UNIT, SHARE = Range(0, 1, low_open=True), Range(0, 1)

#: The allowed range of every numeric key (int or float) of :class:`~sac_glam.config.Config`, checked at
#: load (:func:`check_ranges`); a numeric key missing here fails every load, so a new key needs its
#: range. They refuse nonsense only (a count of 0, a negative rate), never a value a run could use.
RANGES: dict[str, Range] = {
    "env.n_objects": AT_LEAST_1, "env.max_steps": AT_LEAST_1, "env.n_envs": AT_LEAST_1,
    "model.tiny.d_model": AT_LEAST_1, "model.tiny.n_layers": AT_LEAST_1, "model.tiny.n_heads": AT_LEAST_1,
    "model.tiny.d_ff": AT_LEAST_1, "model.tiny.pretrain_steps": AT_LEAST_0,
    "model.tiny.pretrain_corpus": AT_LEAST_1, "model.tiny.pretrain_batch": AT_LEAST_1,
    "model.tiny.pretrain_lr": POSITIVE, "model.tiny.pretrain_seed": AT_LEAST_0,
    "model.lora_r": AT_LEAST_1, "model.lora_alpha": AT_LEAST_1, "model.lora_dropout": Range(0, 1, high_open=True),
    "model.minibatch_size": AT_LEAST_1,
    "sac.gamma": UNIT, "sac.batch_size": AT_LEAST_1, "sac.update_every": AT_LEAST_1, "sac.n_updates": AT_LEAST_1,
    # A learning rate of 0 freezes its part (docs/robustness.md's diagnosis runs sac.actor_lr=0.0).
    "sac.learning_starts": AT_LEAST_0, "sac.warmup_updates": AT_LEAST_0, "sac.actor_lr": AT_LEAST_0,
    "sac.critic_lr": AT_LEAST_0, "sac.alpha_init": POSITIVE,
    # The entropy of a discrete policy is >= 0: a negative target would only drive alpha to 0.
    "sac.target_entropy": AT_LEAST_0, "sac.alpha_lr": AT_LEAST_0, "sac.reward_scale": POSITIVE,
    "sac.max_grad_norm": POSITIVE, "sac.chunk_size": AT_LEAST_1,
    "buffer.capacity": AT_LEAST_1, "buffer.n_step": AT_LEAST_1, "buffer.her_ratio": SHARE,
    "critic.width": AT_LEAST_1, "critic.n_critics": AT_LEAST_1, "critic.tau": UNIT,
    "ppo.n_steps": AT_LEAST_1, "ppo.epochs": AT_LEAST_1, "ppo.batch_size": AT_LEAST_1, "ppo.ent_coef": AT_LEAST_0,
    "ppo.vf_coef": AT_LEAST_0, "ppo.gamma": UNIT, "ppo.lr": AT_LEAST_0, "ppo.gae_lambda": UNIT,
    "ppo.clip_range": POSITIVE, "ppo.max_grad_norm": POSITIVE, "ppo.chunk_size": AT_LEAST_1,
    "train.total_steps": AT_LEAST_1, "train.time_limit_s": AT_LEAST_0, "train.seed": AT_LEAST_0, "train.eval_every": AT_LEAST_0,
    "train.eval_episodes": AT_LEAST_1, "train.log_every": AT_LEAST_1, "train.log_window": AT_LEAST_1,
    "train.checkpoint_every": AT_LEAST_0, "train.threads": AT_LEAST_0,
}  # fmt: skip


def numeric_keys(cls: type, prefix: str = "") -> list[str]:
    """The dotted keys of every int and float field (``float | None`` too) below dataclass ``cls``."""
    keys = []
    for name, tp in typing.get_type_hints(cls).items():
        union = typing.get_origin(tp) in (typing.Union, types.UnionType)
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            keys += numeric_keys(tp, f"{prefix}{name}.")
        elif (set(typing.get_args(tp)) - {type(None)} if union else {tp}) <= {int, float}:
            keys.append(prefix + name)
    return keys


def check_ranges(cfg: Config) -> None:
    """Every numeric key inside its :data:`RANGES` entry (None, where a key allows it, is not checked)."""
    for key in numeric_keys(type(cfg)):
        value: Any = cfg
        for attr in key.split("."):
            value = getattr(value, attr)
        allowed = RANGES[key]
        _require(value is None or allowed.allows(value), f"{key}: must be {allowed}, got {value}")


def validate(cfg: Config) -> None:
    """Cross-field and range checks that the types alone cannot express."""
    check_ranges(cfg)
    _require(
        cfg.sac.target_entropy_mode != "fraction" or cfg.sac.target_entropy <= 1,
        f"sac.target_entropy: must be in [0, 1] with sac.target_entropy_mode=fraction (a share of "
        f"log|A|), got {cfg.sac.target_entropy}",
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
    """What the model would refuse only once a run had started building it, as far as the config alone
    can tell; what needs the environment's goals or the model presets is checked beside those
    (``sac_glam/envs/checks.py``, ``sac_glam/llm/models.py``), by ``sac_glam.run.configs.load_config``."""
    tiny = cfg.model.tiny
    is_tiny = cfg.model.name.startswith("tiny-")
    _require(
        not is_tiny or tiny.d_model % tiny.n_heads == 0,
        f"model.tiny.d_model ({tiny.d_model}) must be divisible by model.tiny.n_heads ({tiny.n_heads})",
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
