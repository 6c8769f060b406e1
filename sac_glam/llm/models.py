"""Load the LLM: offline tiny presets or a Hugging Face model, with LoRA and 4-bit nf4 (Appendix C).

- ``tiny-t5`` / ``tiny-causal``: randomly initialised T5 / GPT-2 built from :class:`TinyModelConfig`
  with the word-level tokenizer over Playground-Text's closed vocabulary (no download). Seed with
  ``torch.manual_seed`` before calling :func:`load_model`. GPT-2 has absolute position embeddings,
  so it exercises the position-id handling of the scorer under padding.
- Any other name: ``from_pretrained`` (hub name or local path); the family comes from
  ``config.is_encoder_decoder`` unless ``ModelConfig.family`` says.
- ``lora``: peft LoRA adapters (adapter name ``default``) on the family's attention projections; only
  they train. Without LoRA every LLM weight trains.
- ``load_in_4bit``: base weights in nf4 with double quantisation (QLoRA, Dettmers et al. 2023),
  on the resolved ``train.device``, computing in bfloat16 where that device supports it and float32
  elsewhere; the modules that stay unquantised (embeddings, layer norms, ``lm_head``) in float32.
  Only with LoRA (4-bit weights cannot be trained). The whole dtype policy: ``docs/devices.md``.

The LLM always runs with dropout off (``model.eval()``): the policy that acts must be the policy that
is scored in the update (importance ratios in PPO, log pi in SAC), so no stochastic layers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import transformers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    T5Config,
    T5ForConditionalGeneration,
)

from sac_glam.config import ConfigError, ModelConfig, TinyModelConfig
from sac_glam.envs.goals import vocabulary
from sac_glam.llm.tokenizer import build_word_tokenizer

Family = Literal["seq2seq", "causal"]
TINY_PRESETS: dict[str, Family] = {"tiny-t5": "seq2seq", "tiny-causal": "causal"}

#: Text pretraining of a tiny preset in place, returning its loss per step: ``sac_glam.pretrain.pretrain_tiny``.
#: Handed in by the caller because it reads Playground-Text, which sits beside ``llm/``, not below it.
Pretrainer = Callable[[PreTrainedModel, PreTrainedTokenizerBase, TinyModelConfig], list[float]]


def check_config(cfg: ModelConfig) -> None:
    """``model.family`` agrees with a tiny preset's own family (a one-line error before loading)."""
    preset = TINY_PRESETS.get(cfg.name, cfg.family)
    if cfg.name.startswith("tiny-") and cfg.family not in ("auto", preset):
        raise ConfigError(
            f"model.family={cfg.family!r} contradicts model.name={cfg.name!r} ({preset}); use model.family=auto"
        )


#: LoRA target modules per ``config.model_type`` (Appendix C: LoRA on the attention projections).
LORA_DEFAULT_TARGETS: dict[str, list[str]] = {
    "t5": ["q", "v"],
    "mt5": ["q", "v"],
    "umt5": ["q", "v"],
    "gpt2": ["c_attn"],
}
LLAMA_LIKE_TARGETS = ["q_proj", "v_proj"]


class ModelLoadError(RuntimeError):
    """A model name or path that could not be loaded."""


@dataclass
class LoadedModel:
    """A ready-to-score LLM: ``model`` (possibly a peft ``PeftModel``), its tokenizer and family."""

    model: Any
    """``PreTrainedModel`` or peft ``PeftModel`` wrapping one."""
    tokenizer: PreTrainedTokenizerBase
    family: Family


def build_tiny_model(name: str, tiny: TinyModelConfig, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """The randomly initialised ``tiny-t5`` or ``tiny-causal`` model (dropout 0; seed in the caller)."""
    vocab_size = len(tokenizer)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    if tiny.d_model % tiny.n_heads:
        raise ValueError(f"tiny.d_model={tiny.d_model} must be divisible by tiny.n_heads={tiny.n_heads}")
    if name == "tiny-t5":
        t5 = T5Config(
            vocab_size=vocab_size,
            d_model=tiny.d_model,
            d_kv=tiny.d_model // tiny.n_heads,
            d_ff=tiny.d_ff,
            num_layers=tiny.n_layers,
            num_decoder_layers=tiny.n_layers,
            num_heads=tiny.n_heads,
            dropout_rate=0.0,
            pad_token_id=pad,
            eos_token_id=eos,
            # T5 starts decoding from the pad token; ours is a real, non-zero id.
            decoder_start_token_id=pad,
        )
        return T5ForConditionalGeneration(t5)
    if name == "tiny-causal":
        gpt2 = GPT2Config(
            vocab_size=vocab_size,
            n_embd=tiny.d_model,
            n_layer=tiny.n_layers,
            n_head=tiny.n_heads,
            n_inner=tiny.d_ff,
            n_positions=256,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            pad_token_id=pad,
            eos_token_id=eos,
            bos_token_id=eos,
            # GPT-2's tanh GELU (the default ``gelu_new``) as one fused kernel instead of seven
            # elementwise ops: the same function to float rounding (2e-7), a third of the MLP's time.
            activation_function="gelu_pytorch_tanh",
        )
        return GPT2LMHeadModel(gpt2)
    raise ValueError(f"unknown tiny preset {name!r}; choose one of {sorted(TINY_PRESETS)}")


_PRETRAINED: dict[tuple[Any, ...], dict[str, torch.Tensor]] = {}
"""Pretrained tiny weights by (preset, TinyModelConfig): the policy and a separate critic LLM (and every
Lamorel server in one process) reuse them instead of pretraining again."""


def pretrained_tiny_model(
    name: str, tiny: TinyModelConfig, tokenizer: PreTrainedTokenizerBase, pretrain: Pretrainer | None
) -> PreTrainedModel:
    """The tiny preset after text pretraining, seeded by ``tiny.pretrain_seed`` alone so that every run
    and algorithm starts from the same weights: from memory, the shipped folder or the user cache, else
    pretrained now by ``pretrain`` (``sac_glam.pretrain.pretrain_tiny``) and cached."""
    key = (name, *dataclasses.astuple(tiny))
    path = pretrained_cache_path(name, tiny, tokenizer)
    found = pretrained_weights_file(path)
    if key not in _PRETRAINED and found is not None:
        _PRETRAINED[key] = torch.load(found, map_location="cpu", weights_only=True)
    if key in _PRETRAINED:
        with torch.random.fork_rng(devices=[]):  # the run's seeded RNG stream is left as it was
            model = build_tiny_model(name, tiny, tokenizer)
        model.load_state_dict(_PRETRAINED[key])
        return model
    if pretrain is None:
        raise ModelLoadError(
            f"model.tiny.pretrain_steps={tiny.pretrain_steps}: no pretrained weights of this tiny config "
            f"in {SHIPPED_PRETRAINED} or at {path}, and no pretraining was handed in: build the agent "
            "through sac_glam.backends (it pretrains on a miss), pass pretrain=sac_glam.pretrain.pretrain_tiny, "
            "or run `sac-glam pretrain` with the run's overrides first"
        )
    model, _ = pretrain_from_seed(name, tiny, tokenizer, pretrain)
    _PRETRAINED[key] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    save_atomically(_PRETRAINED[key], path)
    return model


def pretrain_from_seed(
    name: str, tiny: TinyModelConfig, tokenizer: PreTrainedTokenizerBase, pretrain: Pretrainer
) -> tuple[PreTrainedModel, list[float]]:
    """The tiny preset initialised from ``tiny.pretrain_seed`` and text-pretrained by ``pretrain``, with its
    loss per step; the global RNG is left as it was (a run's seed, not the pretraining, decides what
    follows)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(tiny.pretrain_seed)
        model = build_tiny_model(name, tiny, tokenizer)
        losses = pretrain(model, tokenizer, tiny)
    return model, losses


#: Bump when ``sac_glam/pretrain.py``'s objectives or corpus change: cached weights of the old
#: version are then never read.
PRETRAIN_VERSION = 1

#: Pretrained weights that ship with the package (``sac-glam pretrain --out`` this folder writes them),
#: read before the user cache: the configs that use them start from the same file on every machine,
#: as every run of the paper starts from the same Flan-T5 checkpoint, and pay no pretraining.
SHIPPED_PRETRAINED = Path(__file__).resolve().parent.parent / "assets" / "pretrained"


def pretrained_cache_path(name: str, tiny: TinyModelConfig, tokenizer: PreTrainedTokenizerBase) -> Path:
    """Where the pretrained weights of (preset, ``tiny``, vocabulary) are cached on disk.

    Pretraining is a few CPU-minutes (1,500 steps of d_model 64: about 5.5 minutes on one thread) and
    depends on nothing of the run, so every seed, algorithm and process of a machine shares one copy,
    as every run of the paper shares one Flan-T5 checkpoint. ``SAC_GLAM_CACHE`` (default
    ``~/.cache/sac-glam``) sets the folder; deleting it only costs the pretraining again.
    """
    vocab = sorted(tokenizer.get_vocab().items())
    digest = hashlib.sha256(repr((PRETRAIN_VERSION, name, dataclasses.astuple(tiny), vocab)).encode())
    root = Path(os.environ.get("SAC_GLAM_CACHE") or Path.home() / ".cache" / "sac-glam")
    return root / "pretrained" / f"{name}-{digest.hexdigest()[:16]}.pt"


def pretrained_weights_file(cached: Path) -> Path | None:
    """The file a run loads for the cache path ``cached``: the shipped copy first, then the user cache;
    None when neither exists (the run then pretrains and writes ``cached``)."""
    return next((f for f in (SHIPPED_PRETRAINED / cached.name, cached) if f.is_file()), None)


def save_atomically(state: dict[str, torch.Tensor], path: Path) -> None:
    """Write ``state`` to ``path`` through a temporary file and a rename, so that seeds started side by
    side never read a half-written file. A cache that cannot be written is skipped, not an error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as f:
            torch.save(state, f)
        os.chmod(f.name, 0o644)  # NamedTemporaryFile's 0600 would hide it from the other users of a cache
        os.replace(f.name, path)
    except OSError as e:
        print(f"note: pretrained weights not cached at {path}: {e}", flush=True)


# ---------------------------------------------------------------------------------------------------
# The dtype policy (docs/devices.md): bf16 where the device computes it natively, fp32 everywhere else
# and for everything numerically delicate; never fp16 (the project has no gradient scaler).


def supports_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively: CUDA devices of compute capability 8.0+ (Ampere,
    Hopper). Not the CPU: bf16 is slow there without AMX, and the CPU presets' tests are exact in fp32."""
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The dtype the LLM forward autocasts to on ``device``: bf16 where supported, else None (fp32).
    fp16 autocast is not used: without a gradient scaler small LoRA gradients underflow, and T5
    activations overflow fp16's range."""
    return torch.bfloat16 if supports_bf16(device) else None


def compute_dtype(device: torch.device) -> torch.dtype:
    """The compute dtype of 4-bit layers on ``device`` (the resolved ``train.device``)."""
    return torch.bfloat16 if supports_bf16(device) else torch.float32


def bnb_config(device: torch.device) -> BitsAndBytesConfig:
    """nf4 with double quantisation (QLoRA), computing in :func:`compute_dtype` of ``device``."""
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype(device),
    )


def device_map(device: torch.device) -> dict[str, int | str]:
    """Where ``from_pretrained`` places a 4-bit model: the whole model on ``device``. ``cuda``
    without an index is the current device, not cuda:0: each Lamorel LLM server sets its own GPU
    (``torch.cuda.set_device``) before loading."""
    if device.type == "cuda":
        return {"": device.index if device.index is not None else torch.cuda.current_device()}
    return {"": device.type}


def quantized_kwargs(device: torch.device) -> dict[str, Any]:
    """``from_pretrained`` arguments of a 4-bit load on ``device``. ``torch_dtype=float32`` keeps the
    modules bitsandbytes does not quantise (embeddings, layer norms, ``lm_head``) in fp32: without it
    transformers loads them in fp16, and the log-probs are rounded to fp16 before any ``.float()``
    (peft's ``prepare_model_for_kbit_training`` casts them to fp32 for the same reason)."""
    return {"quantization_config": bnb_config(device), "device_map": device_map(device),
            _DTYPE_KWARG: torch.float32}  # fmt: skip


# transformers 4.56 renamed from_pretrained's ``torch_dtype`` to ``dtype`` (the old name warns).
_DTYPE_KWARG = (
    "dtype" if tuple(int(x) for x in transformers.__version__.split(".")[:2]) >= (4, 56) else "torch_dtype"
)


def keep_output_head_fp32(model: Any) -> None:
    """Run the output projection (``lm_head``) in fp32 even inside a bf16 autocast region, so that
    the logits, and the log-softmax over them, are never rounded to bf16 (a logit of 20 would be off
    by up to 0.06 nats). Its input is cast up; the weights are fp32 already."""
    head = base_model(model).get_output_embeddings()
    if head is None or getattr(head, "_sac_glam_fp32", False):
        return
    forward = head.forward

    def fp32_forward(x: torch.Tensor) -> torch.Tensor:
        if x.device.type not in ("cpu", "cuda"):  # autocast exists for these; elsewhere nothing to undo
            out: torch.Tensor = forward(x)
            return out
        with torch.autocast(device_type=x.device.type, enabled=False):
            out = forward(x.float())
        return out

    head.forward = fp32_forward
    head._sac_glam_fp32 = True


def _disable_cpu_packed_4bit(model: torch.nn.Module) -> None:
    """Keep bitsandbytes' 4-bit layers on one code path on CPU.

    On CPUs with AVX512-BF16, ``Linear4bit.forward`` in eval mode without grad repacks the weight
    in place for a bf16 kernel, so acting (no grad) and updating (grad) would compute slightly
    different log-probs, and the repacking fails when ``in_features`` is not a multiple of 64.
    One float32 dequantise-and-matmul path gives the same numbers in both modes.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False  # type: ignore[assignment]


def _quantize_tiny(model: PreTrainedModel, family: Family, device: torch.device) -> PreTrainedModel:
    """Reload a built tiny model through ``from_pretrained`` in nf4: the same path as hub models."""
    cls = AutoModelForSeq2SeqLM if family == "seq2seq" else AutoModelForCausalLM
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        quantized = cls.from_pretrained(tmp, **quantized_kwargs(device))
    return quantized


def _describe_failure(name: str, family: str) -> str:
    from huggingface_hub import constants

    exists = os.path.exists(name)
    offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE") not in (None, "", "0")
    where = (
        f"local path {os.path.abspath(name)!r} (exists)"
        if exists
        else f"hub name {name!r} (no local path {os.path.abspath(name)!r} exists)"
    )
    return (
        f"could not load model {name!r} (family={family}): tried {where}, "
        f"HF_HUB_OFFLINE={'1' if offline else '0'}. Without network, use a local directory saved by "
        f"save_pretrained or one of the offline presets 'tiny-t5' / 'tiny-causal' (model.name)."
    )


def _load_pretrained(
    cfg: ModelConfig, device: torch.device
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, Family]:
    try:
        hf_config = AutoConfig.from_pretrained(cfg.name)
        family: Family
        if cfg.family == "auto":
            family = "seq2seq" if getattr(hf_config, "is_encoder_decoder", False) else "causal"
        else:
            family = cfg.family
        cls = AutoModelForSeq2SeqLM if family == "seq2seq" else AutoModelForCausalLM
        kwargs: dict[str, Any] = {}
        if cfg.load_in_4bit:
            kwargs.update(quantized_kwargs(device))
        model = cls.from_pretrained(cfg.name, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(cfg.name)
    except Exception as e:
        raise ModelLoadError(
            f"{_describe_failure(cfg.name, cfg.family)} Cause: {type(e).__name__}: {e}"
        ) from e
    if tokenizer.pad_token_id is None:
        # Causal tokenizers often have no pad token. Its value never matters to the scorer, which
        # masks padding explicitly (attention masks, position ids, gathers), so EOS will do.
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer, family


def default_lora_targets(model: PreTrainedModel) -> list[str]:
    """LoRA target modules for a model: T5 ``q, v``; GPT-2 ``c_attn``; Llama-like ``q_proj, v_proj``."""
    return LORA_DEFAULT_TARGETS.get(getattr(model.config, "model_type", ""), LLAMA_LIKE_TARGETS)


def lora_config(cfg: ModelConfig, model: PreTrainedModel) -> Any:
    """The peft ``LoraConfig`` for ``cfg`` (also used to add the target-critic adapter)."""
    from peft import LoraConfig

    targets = list(cfg.lora_target_modules) or default_lora_targets(model)
    is_gpt2 = getattr(model.config, "model_type", "") == "gpt2"
    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        # GPT-2 stores its projections as Conv1D (weight transposed).
        fan_in_fan_out=is_gpt2,
        bias="none",
    )


def load_model(
    cfg: ModelConfig, device: torch.device | str = "cpu", pretrain: Pretrainer | None = None
) -> LoadedModel:
    """Build or load the LLM of ``cfg`` with its tokenizer, LoRA and quantisation applied.

    ``pretrain`` text-pretrains a tiny preset with ``tiny.pretrain_steps > 0`` whose weights are neither
    shipped nor cached (:func:`pretrained_tiny_model`); without it such a miss is a ModelLoadError.

    ``device`` (the resolved ``train.device``) decides where a 4-bit model is loaded and its compute
    dtype; other models are loaded on the CPU and moved by the caller (``LLMAgent.to``).

    Raises :class:`ModelLoadError` (what was tried, and the offline presets) when loading fails, and
    ``ValueError`` for 4-bit without LoRA.
    """
    device = torch.device(device)
    if cfg.load_in_4bit and not cfg.lora:
        raise ValueError(
            "model.load_in_4bit=true requires model.lora=true: 4-bit nf4 weights cannot be trained, "
            "so only LoRA adapters on top of them can (QLoRA, Appendix C)."
        )
    family: Family
    if cfg.name in TINY_PRESETS:
        family = TINY_PRESETS[cfg.name]
        if cfg.family not in ("auto", family):
            raise ValueError(f"model.family={cfg.family!r} contradicts preset {cfg.name!r} ({family})")
        tokenizer: PreTrainedTokenizerBase = build_word_tokenizer(vocabulary())
        if cfg.tiny.pretrain_steps > 0:
            model = pretrained_tiny_model(cfg.name, cfg.tiny, tokenizer, pretrain)
        else:
            model = build_tiny_model(cfg.name, cfg.tiny, tokenizer)
        if cfg.load_in_4bit:
            model = _quantize_tiny(model, family, device)
    else:
        model, tokenizer, family = _load_pretrained(cfg, device)
    if cfg.load_in_4bit:
        _disable_cpu_packed_4bit(model)
    keep_output_head_fp32(model)
    if cfg.lora:
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(cfg, model))
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, family=family)


def base_model(model: Any) -> PreTrainedModel:
    """The transformers model inside a peft wrapper (LoRA layers are injected in place, so calling it
    runs the active adapter), or ``model`` itself."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def model_family(model: Any) -> Family:
    """``seq2seq`` or ``causal`` from ``config.is_encoder_decoder`` (works through peft wrappers)."""
    return "seq2seq" if getattr(base_model(model).config, "is_encoder_decoder", False) else "causal"
