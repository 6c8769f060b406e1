"""Typed configuration: one dataclass per concern, one docstring per field.

Configs are YAML files in ``lamorel_configs/`` (hydra-composed, so ``defaults:`` lists and
``key=value`` overrides work), merged into :class:`Config`. Unknown keys, wrong types and
option values outside their ``Literal`` are errors that name the dotted key and the allowed values.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from omegaconf import OmegaConf

T = TypeVar("T")


class ConfigError(ValueError):
    """A config key, type or value that is not allowed."""


@dataclass
class EnvConfig:
    """Playground-Text (``docs/environment.md``)."""

    n_objects: int = 6
    """Objects per scene (paper: 6; the Appendix B ablation: 3)."""
    max_steps: int = 15
    """Step limit per episode; reaching it truncates (never terminates) the episode."""
    sequential_goals: bool = True
    """Include ``{A} then {b}`` goals (8,470 train goals); False gives the Appendix B ablation's simple goals."""
    goal_types: list[str] = field(default_factory=list)
    """Restrict sampled goals to these types (grasp, grow, grow_then_grasp, grow_then_grow); empty: all."""
    n_envs: int = 32
    """Environments stepped together (paper: 32)."""


@dataclass
class TinyModelConfig:
    """Dimensions of the offline presets ``tiny-t5`` / ``tiny-causal`` (randomly initialised)."""

    d_model: int = 64
    n_layers: int = 2
    """Encoder layers and decoder layers (each) for tiny-t5; blocks for tiny-causal."""
    n_heads: int = 4
    d_ff: int = 128
    pretrain_steps: int = 0
    """Adam steps of masked-word pretraining on Playground-Text prompts (``sac_glam/llm/pretrain.py``);
    0: the model stays randomly initialised. The weights then depend only on this config, not the run's seed."""
    pretrain_corpus: int = 20000
    """Prompts (from random-policy rollouts, train goals) the pretraining samples from."""
    pretrain_batch: int = 128
    pretrain_lr: float = 1.0e-3
    pretrain_seed: int = 0
    """Seed of the initial weights, the corpus and the masks when ``pretrain_steps > 0``."""


@dataclass
class ModelConfig:
    """The LLM: which model, LoRA, quantisation and how scores become a policy."""

    name: str = "tiny-t5"
    """``tiny-t5`` / ``tiny-causal`` (offline presets), a hub name (``google/flan-t5-base``) or a local path."""
    family: Literal["auto", "seq2seq", "causal"] = "auto"
    """Architecture family; ``auto`` reads it from the model config."""
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    lora: bool = False
    """Train LoRA adapters (peft) instead of all LLM weights (Appendix C)."""
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: list[str] = field(default_factory=list)
    """Module names LoRA wraps; empty: the family's default (T5: q, v; GPT-2: c_attn; Llama-like: q_proj, v_proj)."""
    load_in_4bit: bool = False
    """Load the base weights in 4-bit nf4 through bitsandbytes (Appendix C); requires ``lora``."""
    normalization: Literal["sum", "constrained", "mean"] = "sum"
    """How action scores become pi: ``sum`` = softmax of summed token log-probs (eq. 1-2);
    ``constrained`` = decoding restricted to the admissible actions' prefix tree; ``mean`` = softmax of
    length-normalised log-probs."""
    minibatch_size: int = 512
    """(prompt, action) rows per forward pass."""


@dataclass
class SACConfig:
    """SAC-GLAM (paper Tables 2 and 3; Section 2)."""

    gamma: float = 0.99
    batch_size: int = 256
    """Transitions per gradient step."""
    update_every: int = 32
    """Collected transitions between two updates, summed over environments (32 envs -> every env step)."""
    n_updates: int = 2
    """Gradient steps per update, each on a fresh batch (Table 2's "number of updates")."""
    learning_starts: int = 1024
    """Transitions collected before the first update."""
    warmup_updates: int = 0
    """Gradient steps at the start that train the critic only (Section 2.2)."""
    actor_lr: float = 1e-4
    critic_lr: float = 1e-4
    auto_alpha: bool = True
    """Learn the entropy coefficient (Table 2 "auto"); False keeps ``alpha_init`` fixed."""
    alpha_init: float = 0.005
    """Initial (or fixed) entropy coefficient: 0.005 for SAC-GLAM, 0.05 for SAC-GLAM+HER."""
    target_entropy: float = 0.0
    """Target entropy: 0 for SAC-GLAM, 0.01 for +HER (nats, or a fraction of log|A| with mode ``fraction``)."""
    target_entropy_mode: Literal["absolute", "fraction"] = "absolute"
    """``absolute``: ``target_entropy`` nats (the paper); ``fraction``: ``target_entropy * log|A_s|``."""
    alpha_lr: float = 2e-3
    actor_loss: Literal["reverse_kl", "forward_kl"] = "reverse_kl"
    """``reverse_kl``: E_pi[alpha log pi - Q] (the paper; KL(pi || p_Q) up to a constant); ``forward_kl``:
    the cross-entropy -E_{p_Q}[log pi] with p_Q = softmax(Q / alpha), whose gradient does not vanish on a
    saturated policy (``sac_glam/algos/sac.py``, ``actor_loss_forward_kl``)."""
    reward_scale: float = 1.0
    """Multiplies rewards in the critic target."""
    max_grad_norm: float | None = None
    """Clip the global gradient norm of the LLM and critic (None: no clipping, as the paper)."""
    chunk_size: int = 256
    """Transitions per forward/backward chunk (gradient accumulation); the result equals one full batch."""


@dataclass
class BufferConfig:
    """The SAC replay buffer: n-step returns (eq. 3, Appendix F) and HER (Section 2.3, Appendix E)."""

    capacity: int = 100_000
    """Stored transitions, environment and HER-relabelled copies together (paper: 100,000). Counting the
    copies bounds the age of the oldest transition, which keeps n-step targets near on-policy (Appendix F)."""
    n_step: int = 3
    """Rewards summed before bootstrapping, n in eq. 3 (paper: 3; 5 was unstable, Appendix F)."""
    her: bool = False
    """Relabel each episode with every goal the social partner reports it achieved (Section 2.3)."""
    her_strategy: Literal["uniform", "ratio", "prior"] = "ratio"
    """Batch composition (Appendix E): ``uniform`` over stored transitions; ``ratio``: ``her_ratio`` of the
    batch from HER copies; ``prior``: goal types follow the environment's goal-type distribution (Figure 4)."""
    her_ratio: float = 0.5
    """Share of each batch drawn from HER transitions under ``ratio`` (paper: 0.5)."""


@dataclass
class CriticConfig:
    """The critic (Section 2.2, Appendix B): which LLM state the Q head reads, and the target copy."""

    input: Literal["prompt_action", "prompt"] = "prompt_action"
    """``prompt_action``: Q(s, a) = MLP(last hidden state after prompt + action), one output (the
    paper's best); ``prompt``: MLP(prompt state) with one output per action of the full action vocabulary."""
    backprop_llm: bool = True
    """Let the critic's gradients flow into the shared LLM/LoRA weights (Appendix B); False trains the head only."""
    share_llm: bool = True
    """The critic reads the policy's LLM (the paper: one LLM, an MLP head). False gives the critic its own
    copy of the LLM (standard SAC's separate actor and critic networks; twice the LLM compute)."""
    width: int = 1024
    """Hidden units of each of the head's two hidden layers (Appendix C: 1024)."""
    n_critics: int = 1
    """1: a single Q head (the paper); 2: clipped double Q (two heads, the target takes their minimum)."""
    target: Literal["head", "adapter"] = "head"
    """What the target critic copies: ``head`` = a Polyak copy of the Q heads reading the online LLM's
    features; ``adapter`` = also a Polyak copy of the LoRA adapter (a target LLM), one more no-grad forward."""
    tau: float = 0.005
    """Polyak coefficient: target <- tau * online + (1 - tau) * target, after every gradient step."""


@dataclass
class PPOConfig:
    """PPO-GLAM, the on-policy baseline (Carta et al. 2023; paper Table 1)."""

    n_steps: int = 2048
    """Transitions collected between two updates, summed over environments."""
    epochs: int = 16
    batch_size: int = 256
    """Transitions per minibatch (gradient step)."""
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    gamma: float = 0.99
    lr: float = 1e-4
    gae_lambda: float = 0.99
    clip_range: float = 0.2
    max_grad_norm: float = 0.5
    normalize_advantages: bool = True
    """Normalise advantages per minibatch to zero mean and unit variance (SB3's default)."""
    clip_value_loss: bool = False
    """Clip the value update around the old value estimate by ``clip_range`` (PPO2's value clipping)."""
    chunk_size: int = 256
    """Transitions per forward/backward chunk (gradient accumulation); the result equals one full minibatch."""


@dataclass
class TrainConfig:
    """The run: algorithm, budget, evaluation, logging, checkpoints."""

    algo: Literal["sac", "ppo"] = "sac"
    backend: Literal["local", "lamorel"] = "local"
    """``local``: the LLM in this process (embedded default); ``lamorel``: in Lamorel's LLM servers."""
    total_steps: int = 400_000
    """Environment transitions, summed over environments (the paper's x-axis)."""
    seed: int = 0
    run_dir: str = ""
    """Where logs, checkpoints and plots go; empty: ``runs/{name}/seed{seed}``."""
    eval_every: int = 20_000
    """Transitions between evaluations on held-out episodes (0: only at the end)."""
    eval_episodes: int = 128
    """Episodes per evaluation and split."""
    eval_splits: list[str] = field(default_factory=lambda: ["train", "test"])
    """Goal splits evaluated: ``train`` goals and the held-out ``test`` goals."""
    eval_greedy: bool = False
    """Evaluate the argmax action instead of sampling from pi."""
    log_every: int = 2048
    """Transitions between two metric records."""
    log_window: int = 256
    """Training episodes averaged in ``rollout/success_rate``."""
    checkpoint_every: int = 500
    """Gradient steps between checkpoints (0: only at the end and on SIGTERM/SIGUSR1)."""
    allow_config_change: bool = False
    """Resume from a checkpoint written by a different config (its differing keys are printed)."""
    restart: bool = False
    """Start over at step 0 when the run directory holds a run that cannot be resumed (unreadable
    checkpoints, or metrics without a checkpoint), moving its files into ``restart-<UTC time>/``
    instead of refusing. A readable checkpoint is always resumed, so it is safe in a requeued job."""
    threads: int = 0
    """torch CPU threads (0: torch's default, all cores)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    progress: bool = True
    """Show a progress bar: steps, steps/s, and the episodes finished and their recent success rate,
    updated as episodes end."""
    tensorboard: bool = True
    wandb: bool = False
    """Also send the metrics and the config to Weights & Biases (``pip install 'sac-glam[wandb]'``);
    its files go to ``{run_dir}/wandb/``."""
    wandb_mode: Literal["", "offline", "online", "disabled"] = ""
    """``offline`` (no network needed; upload later with ``wandb sync``), ``online`` or ``disabled``;
    empty: ``$WANDB_MODE`` when set, else ``offline``."""
    wandb_project: str = "sac-glam"
    """The W&B project; the run is named ``{name}/seed{seed}`` and grouped by ``name``."""


@dataclass
class Config:
    """Everything a run needs. YAML files in ``lamorel_configs/`` fill it."""

    name: str = ""
    """Experiment name (default: the config file's name); runs go to ``runs/{name}/seed{seed}``."""
    env: EnvConfig = field(default_factory=EnvConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    sac: SACConfig = field(default_factory=SACConfig)
    buffer: BufferConfig = field(default_factory=BufferConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    lamorel_args: dict[str, Any] = field(default_factory=dict)
    """Lamorel's own settings (``docs/lamorel_facts.md``); read by the ``lamorel`` backend only."""
    rl_script_args: dict[str, Any] = field(default_factory=dict)
    """Filled by ``lamorel-launch`` for Lamorel's launcher (the RL script's path)."""


# ---------------------------------------------------------------------------------------------------
# Loading and validation
# ---------------------------------------------------------------------------------------------------

DEFAULT_CONFIG = "sac_glam_her_cpu"


def config_dir() -> Path:
    """``lamorel_configs/`` of the source tree (or ``$SAC_GLAM_CONFIG_DIR``), as an absolute path."""
    env = os.environ.get("SAC_GLAM_CONFIG_DIR")
    candidates = [Path(env)] if env else []
    candidates += [Path(__file__).resolve().parents[1] / "lamorel_configs", Path.cwd() / "lamorel_configs"]
    for path in candidates:
        if path.is_dir():
            return path.resolve()
    raise ConfigError(f"no config directory found; looked in {', '.join(map(str, candidates))}")


def available_configs(directory: Path | None = None) -> list[str]:
    return sorted(p.stem for p in (directory or config_dir()).glob("*.yaml"))


def load_config(
    name: str = DEFAULT_CONFIG, overrides: Sequence[str] = (), directory: str | Path | None = None
) -> Config:
    """Compose ``{directory}/{name}.yaml`` (hydra ``defaults:`` lists work), apply ``key=value``
    overrides, and validate into a :class:`Config`."""
    from hydra import compose, initialize_config_dir

    path = Path(directory).resolve() if directory else config_dir()
    if not (path / f"{name}.yaml").exists():
        raise ConfigError(f"no config {name!r} in {path}; available: {', '.join(available_configs(path))}")
    with initialize_config_dir(config_dir=str(path), version_base=None):
        composed = compose(config_name=name)
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"overrides must look like key=value, got {bad}")
    # Overrides are merged here rather than by hydra so that a key the YAML leaves at its dataclass
    # default can still be overridden, and a misspelt key gets our error listing the allowed keys.
    plain = OmegaConf.create(OmegaConf.to_container(composed, resolve=True))  # hydra's struct flag off
    merged = OmegaConf.merge(plain, OmegaConf.from_dotlist([o.lstrip("+") for o in overrides]))
    raw = OmegaConf.to_container(merged, resolve=True)
    assert isinstance(raw, dict)
    data = {str(k): v for k, v in raw.items() if k != "defaults"}
    data.setdefault("name", name)
    cfg = from_raw(data)
    if cfg.train.wandb:
        # Checked here, where a user's command starts, rather than in validate(): reading back the
        # config.yaml of a wandb run (probe, report) must not need wandb.
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise ConfigError(WANDB_MISSING) from None
    return cfg


WANDB_MISSING = "train.wandb=true needs wandb: pip install 'sac-glam[wandb]' (or set train.wandb=false)"


def from_raw(raw: dict[str, Any]) -> Config:
    """A validated :class:`Config` from plain data (e.g. a saved ``config.yaml``)."""
    cfg = from_dict(Config, raw)
    validate(cfg)
    return cfg


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


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_diff(
    a: dict[str, Any], b: dict[str, Any], ignore: Sequence[str] = ()
) -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose values differ between two config dicts: ``{key: (a_value, b_value)}``."""
    fa, fb = flatten(a), flatten(b)
    return {
        k: (fa.get(k), fb.get(k))
        for k in sorted(set(fa) | set(fb))
        if k not in ignore and fa.get(k) != fb.get(k)
    }


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(OmegaConf.to_yaml(OmegaConf.create(to_dict(cfg))))
