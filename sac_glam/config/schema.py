"""Typed configuration: one dataclass per concern, one docstring per field.

Configs are YAML files in ``lamorel_configs/`` (hydra-composed, so ``defaults:`` lists and
``key=value`` overrides work), merged into :class:`Config`. Unknown keys, wrong types and
option values outside their ``Literal`` are errors that name the dotted key and the allowed values.

This module holds the keys: the dataclasses, each field with its docstring, which is where a user looks
a key up. Turning YAML into them lives beside it: ``loading.py`` (finding, composing and saving config
files) and ``validation.py`` (types, ranges and cross-field rules, :class:`ConfigError`);
``sac_glam.config`` re-exports all three.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


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
    """Hidden size (embeddings, attention, the last hidden state the critic reads)."""
    n_layers: int = 2
    """Encoder layers and decoder layers (each) for tiny-t5; blocks for tiny-causal."""
    n_heads: int = 4
    """Attention heads per layer (``d_model`` must be a multiple)."""
    d_ff: int = 128
    """Width of the feed-forward layer of each block."""
    pretrain_steps: int = 0
    """Adam steps of masked-word pretraining on Playground-Text prompts (``sac_glam/pretrain.py``);
    0: the model stays randomly initialised. The weights then depend only on this config, not the run's seed."""
    pretrain_corpus: int = 20000
    """Prompts (from random-policy rollouts, train goals) the pretraining samples from."""
    pretrain_batch: int = 128
    """Prompts per pretraining step."""
    pretrain_lr: float = 1.0e-3
    """Adam learning rate of the pretraining."""
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
    """Rank of the LoRA adapters (with ``lora``; paper: 16)."""
    lora_alpha: int = 32
    """LoRA scaling numerator: the update is scaled by ``lora_alpha / lora_r``."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA adapters' input."""
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
    """Discount factor of the soft Q targets."""
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
    """Adam learning rate of the policy (the LLM, or its adapters)."""
    critic_lr: float = 1e-4
    """Adam learning rate of the Q heads (and of the LLM through them when the critic backpropagates into it)."""
    auto_alpha: bool = True
    """Learn the entropy coefficient (Table 2 "auto"); False keeps ``alpha_init`` fixed."""
    alpha_init: float = 0.005
    """Initial (or fixed) entropy coefficient: 0.005 for SAC-GLAM, 0.05 for SAC-GLAM+HER."""
    target_entropy: float = 0.0
    """Target entropy: 0 for SAC-GLAM, 0.01 for +HER (nats, or a fraction of log|A| with mode ``fraction``)."""
    target_entropy_mode: Literal["absolute", "fraction"] = "absolute"
    """``absolute``: ``target_entropy`` nats (the paper); ``fraction``: ``target_entropy * log|A_s|``."""
    alpha_lr: float = 2e-3
    """Adam learning rate of log alpha (with ``auto_alpha``)."""
    actor_loss: Literal["reverse_kl", "forward_kl"] = "reverse_kl"
    """``reverse_kl``: E_pi[alpha log pi - Q] (the paper; KL(pi || p_Q) up to a constant); ``forward_kl``:
    the cross-entropy -E_{p_Q}[log pi] with p_Q = softmax(Q / alpha), whose gradient does not vanish on a
    saturated policy (``sac_glam/algos/sac.py``, ``actor_loss_forward_kl``)."""
    backup: Literal["policy", "boltzmann"] = "policy"
    """The next state's value in the critic target (eq. 3): ``policy`` = E_{a'~pi}[Q - alpha log pi] (SAC,
    the paper); ``boltzmann`` = alpha log sum_a' exp(Q / alpha), the soft value of the critic's own
    Boltzmann policy softmax(Q / alpha), which the actor is trained toward (soft Q-learning's backup;
    max_a' Q as alpha -> 0). docs/agent.md, "The critic's backup"."""
    target_lower_bound: bool = False
    """Raise the critic target to the return observed after the transition when that is higher:
    y = max(y, sum_i gamma^i r_{t+i}) to the end of its episode or HER copy. With non-negative rewards and
    deterministic dynamics (Playground-Text) the observed return is a lower bound of Q*(s, a), so a
    success seen in hindsight reaches Q at once instead of through n-step bootstraps of a critic that
    does not yet value the states in between (optimality tightening, He et al. 2017; self-imitation's
    max(R, V), Oh et al. 2018). Not in the paper. docs/agent.md, "The critic's backup"."""
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
    capacity_counts: Literal["all", "env"] = "all"
    """What ``capacity`` counts: ``all`` transitions (the paper's buffer), or only ``env`` transitions, so
    that HER copies (references, a few bytes each) no longer shorten the window of stored episodes; on the
    full environment ~30 copies per environment transition leave ``all`` with the last ~230 episodes."""
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
    target: Literal["head", "adapter", "network"] = "head"
    """What the target critic copies: ``head`` = a Polyak copy of the Q heads reading the online LLM's
    features; ``adapter`` = also a Polyak copy of the LoRA adapter (a target LLM), one more no-grad forward;
    ``network`` (with ``share_llm=false``) = also a Polyak copy of the whole critic LLM, standard SAC's
    target network: the bootstrap no longer moves with every critic step (same forward count)."""
    tau: float = 0.005
    """Polyak coefficient: target <- tau * online + (1 - tau) * target, after every gradient step."""


@dataclass
class PPOConfig:
    """PPO-GLAM, the on-policy baseline (Carta et al. 2023; paper Table 1)."""

    n_steps: int = 2048
    """Transitions collected between two updates, summed over environments."""
    epochs: int = 16
    """Passes over each rollout."""
    batch_size: int = 256
    """Transitions per minibatch (gradient step)."""
    ent_coef: float = 0.01
    """Weight of the entropy bonus in the loss."""
    vf_coef: float = 0.5
    """Weight of the value loss."""
    gamma: float = 0.99
    """Discount factor."""
    lr: float = 1e-4
    """Adam learning rate (LLM and value head)."""
    gae_lambda: float = 0.99
    """GAE's lambda (bias-variance trade-off of the advantages)."""
    clip_range: float = 0.2
    """PPO's ratio clipping epsilon."""
    max_grad_norm: float = 0.5
    """Clip the global gradient norm."""
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
    """``sac``: SAC-GLAM (with HER when ``buffer.her``); ``ppo``: PPO-GLAM."""
    backend: Literal["local", "lamorel"] = "local"
    """``local``: the LLM in this process (embedded default); ``lamorel``: in Lamorel's LLM servers."""
    total_steps: int = 400_000
    """Environment transitions, summed over environments (the paper's x-axis)."""
    time_limit_s: float = 0.0
    """Stop once the run's clock (``time/wall_s``: training and its evaluations, summed over resumes)
    reaches this many seconds, at the end of the iteration, then evaluate and save as at
    ``total_steps``, which stays the ceiling (0: no limit). Gives methods the same wall-clock budget
    (docs/experiments.md, "race-full")."""
    seed: int = 0
    """Seed of the run: the initial weights (heads; a model not pretrained), the environments, the
    action and replay sampling."""
    run_dir: str = ""
    """Where logs, checkpoints and plots go. Empty: ``runs/{name}/seed{seed}`` for a config as it is, and
    ``runs/{name}/{overrides}/seed{seed}`` with overrides on the command line (``lamorel-launch``), so
    that a trial run is not resumed by the default command (``sac_glam.run.configs.default_run_dir``)."""
    eval_every: int = 20_000
    """Transitions between evaluations on held-out episodes (0: only at the end)."""
    eval_episodes: int = 128
    """Episodes per evaluation and split."""
    eval_splits: list[str] = field(default_factory=lambda: ["train", "test"])
    """Goal splits evaluated: ``train`` goals and the held-out ``test`` goals."""
    eval_by_type: bool = False
    """Split ``eval_episodes`` evenly over the goal types (stratified): ``success_rate`` is then their
    success weighted by the goal pool's type shares. For the full environment, whose train goals are
    97.9% sequential, so that the simple types get more than a few episodes per evaluation."""
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
    parallel_llms: bool = True
    """SAC with a separate critic LLM (``critic.share_llm=false``) on the CPU with 2+ threads: the policy
    LLM's and the critic LLM's passes of an update run at the same time, each on half of the threads
    (``llm/lanes.py``; ~1.3x faster updates than both LLMs on 2 threads, one after the other, at the CPU
    presets' size). Exact: the numbers of running the passes one after the other on that half."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where the LLM runs (``auto``: CUDA when available)."""
    progress: bool = True
    """Show a progress bar: steps, the episodes finished and their recent success rate (updated as
    episodes end), the latest evaluation's success; steps/s and the ETA count from the first update
    (``warm-up`` before it: those steps are several times faster)."""
    tensorboard: bool = True
    """Also write the metrics for TensorBoard, to ``{run_dir}/tb/``."""
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
    """Experiment name (default: the config file's name); runs go to ``runs/{name}/...`` (``train.run_dir``)."""
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
