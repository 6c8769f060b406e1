"""``sac-glam make-model``: a paper-shaped model directory without any download.

Writes a randomly initialised ``flan-t5-base``, ``t5-small`` or ``gpt2`` with the PUBLISHED
architecture (the hub's ``config.json``, written below as literals since nothing can be downloaded)
and a real Hugging Face tokenizer trained with ``tokenizers`` on Playground-Text's own text, so that
``model.name=DIR`` takes exactly the code path of a downloaded checkpoint (``models._load_pretrained``:
``AutoConfig`` / ``AutoModelFor*.from_pretrained`` / ``AutoTokenizer.from_pretrained``, LoRA target
modules from ``config.model_type``, 4-bit through ``BitsAndBytesConfig``)::

    sac-glam make-model --arch flan-t5-base --out models/flan-t5-base-shape
    sac-glam ... model.name=models/flan-t5-base-shape

Tokenizers (why BPE): T5's own is a SentencePiece Unigram model; the ``tokenizers`` Unigram trainer
degenerates on this small, repetitive corpus (it drops ``to`` and ``red`` and keeps single letters), so
T5 shapes get a BPE over SentencePiece-style ``▁``-prefixed words (as Llama's ``tokenizer.json``), with
T5's conventions: ``<pad>`` = 0 (also the decoder start), ``</s>`` = 1 appended to every encoded
prompt, ``<unk>`` = 2, newlines normalised to spaces (T5 cannot encode them), 100 sentinels
``<extra_id_*>`` at the top. GPT-2 gets a byte-level BPE (every byte encodable, no prefix space) with
``<|endoftext|>`` as bos/eos/unk at the last id and no pad token, as the hub's ``gpt2``.

The corpus (about 25K lines) saturates: whole words need at most ~440 BPE symbols, so the vocabulary
stays in the hundreds, not the thousands of the real checkpoints. The default sizes leave the rarer
words (furniture names: ``carpet`` -> ``▁car p e t``) in sub-words, so actions tokenise into uneven
lengths, 1 to 9 tokens (``Go to red carnivorous`` 4, ``Grasp`` 1). The model's embedding matrix keeps the
published vocabulary size (32,128 / 50,257 rows; ids beyond the tokenizer are never produced but
take part in every softmax, as in the real checkpoint), so time and memory match the published model.

``--tiny`` keeps each architecture's structure (T5: relu or gated-gelu, tied or untied head, relative
attention; GPT-2: learned positions, Conv1D) at CI size (d_model 64, 2 layers each, 4 heads) with the
embedding matrix cut to the tokenizer's size (T5: rounded up to a multiple of 128, like 32,128).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    AutoConfig,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

from sac_glam.config import EnvConfig
from sac_glam.envs.goals import ALL_ACTIONS, goals
from sac_glam.envs.playground_text import PlaygroundText

#: The hub's config.json of each architecture (transformers' keys; defaults left implicit are T5Config's
#: and GPT2Config's own, which match the hub: e.g. t5-small's ``feed_forward_proj="relu"``, tied head).
PUBLISHED: dict[str, dict[str, Any]] = {
    "flan-t5-base": {
        "model_type": "t5", "architectures": ["T5ForConditionalGeneration"],
        "d_model": 768, "d_kv": 64, "d_ff": 2048, "num_layers": 12, "num_decoder_layers": 12,
        "num_heads": 12, "feed_forward_proj": "gated-gelu", "dense_act_fn": "gelu_new",
        "is_gated_act": True, "tie_word_embeddings": False, "dropout_rate": 0.1,
        "layer_norm_epsilon": 1e-6, "initializer_factor": 1.0, "n_positions": 512,
        "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
        "vocab_size": 32128, "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0,
    },
    "t5-small": {
        "model_type": "t5", "architectures": ["T5ForConditionalGeneration"],
        "d_model": 512, "d_kv": 64, "d_ff": 2048, "num_layers": 6, "num_decoder_layers": 6,
        "num_heads": 8, "feed_forward_proj": "relu", "tie_word_embeddings": True, "dropout_rate": 0.1,
        "layer_norm_epsilon": 1e-6, "initializer_factor": 1.0, "n_positions": 512,
        "relative_attention_num_buckets": 32, "vocab_size": 32128, "pad_token_id": 0,
        "eos_token_id": 1, "decoder_start_token_id": 0,
    },
    "gpt2": {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
        "n_embd": 768, "n_layer": 12, "n_head": 12, "n_positions": 1024, "n_ctx": 1024,
        "activation_function": "gelu_new", "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1,
        "layer_norm_epsilon": 1e-5, "initializer_range": 0.02, "vocab_size": 50257,
        "bos_token_id": 50256, "eos_token_id": 50256,
    },
}  # fmt: skip
ARCHS: tuple[str, ...] = tuple(PUBLISHED)
#: ``--tiny`` dimensions (CI): the architecture's structure, small widths.
TINY_DIMS: dict[str, dict[str, int]] = {
    "t5": {"d_model": 64, "d_kv": 16, "d_ff": 128, "num_layers": 2, "num_decoder_layers": 2, "num_heads": 4},
    "gpt2": {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 256, "n_ctx": 256},
}
#: Default trained vocabulary (tokenizer size before T5's sentinels): sub-words for rare words.
DEFAULT_VOCAB: dict[str, int] = {"t5": 200, "gpt2": 400}
T5_SPECIALS = ("<pad>", "</s>", "<unk>")
GPT2_EOS = "<|endoftext|>"
N_SENTINELS = 100


def corpus(n_prompts: int = 2000, seed: int = 0) -> list[str]:
    """Playground-Text's text: the goals of both splits, every action, and the prompts and admissible
    actions of random-policy episodes (N = 2..6 objects, train goals). Fixed seed: the tokenizer does
    not depend on the model's ``--seed``."""
    lines = [g.text for split in ("train", "test") for g in goals(split)] + list(ALL_ACTIONS)
    rng = np.random.default_rng(seed)
    # Sequential goals need at least 4 objects (docs/environment.md).
    envs = [PlaygroundText(EnvConfig(n_objects=n, sequential_goals=n >= 4)) for n in range(2, 7)]
    prompts = 0
    while prompts < n_prompts:
        env = envs[int(rng.integers(len(envs)))]
        env.reset(seed=int(rng.integers(2**31)))
        done = False
        while not done:
            lines.append(env.prompt)
            lines += env.admissible_actions
            prompts += 1
            _, _, terminated, truncated, _ = env.step_index(int(rng.integers(len(env.admissible_codes))))
            done = terminated or truncated
    return lines


def t5_tokenizer(lines: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """SentencePiece-style BPE with T5's special tokens and conventions (module docstring)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(r"\s+"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.train_from_iterator(
        lines, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(T5_SPECIALS))
    )
    # T5 appends </s> to every encoded sequence (add_special_tokens=True); the scorer relies on this
    # for prompts and tokenises actions without it.
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    # T5's sentinels sit at the top, <extra_id_0> at the highest id.
    sentinels = [f"<extra_id_{i}>" for i in range(N_SENTINELS)]
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        additional_special_tokens=sentinels[::-1],
        model_max_length=512,
        padding_side="right",
    )


def gpt2_tokenizer(lines: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE with GPT-2's conventions (module docstring)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=GPT2_EOS,
        eos_token=GPT2_EOS,
        unk_token=GPT2_EOS,
        model_max_length=1024,
    )


def new_model(config: T5Config | GPT2Config, tie_head: bool = True) -> PreTrainedModel:
    """The randomly initialised model of ``config``, with its own ``lm_head`` unless ``tie_head``.

    Why the flag: transformers 5's T5Config sets ``tie_word_embeddings`` True whatever it is given
    (keeping False only as "do not scale the decoder output"), so a T5 built from it ties ``lm_head`` to
    the embedding, and ``False`` set afterwards unties the encoder's and decoder's embeddings as well.
    flan-t5-base's checkpoint has its own head (24.7M parameters), which ``from_pretrained`` keeps on
    either version (both weights present and different: not tied). So the head is untied here, drawn
    as transformers 4's T5 init draws it (normal, std ``initializer_factor``), and config.json is
    written with ``tie_word_embeddings: false`` (:func:`make_model`), as the hub's."""
    if not isinstance(config, T5Config):
        return GPT2LMHeadModel(config)
    model = T5ForConditionalGeneration(config)
    if not tie_head and model.lm_head.weight is model.shared.weight:  # transformers 5
        head = torch.nn.Parameter(torch.empty_like(model.lm_head.weight))
        torch.nn.init.normal_(head, mean=0.0, std=config.initializer_factor * 1.0)
        model.lm_head.weight = head
        getattr(model, "all_tied_weights_keys", {}).pop("lm_head.weight", None)
    return model


def _ties_head(arch: str) -> bool:
    return bool(PUBLISHED[arch].get("tie_word_embeddings", True))


def model_config(arch: str, tokenizer: PreTrainedTokenizerFast, tiny: bool = False) -> T5Config | GPT2Config:
    """The published config of ``arch`` with the tokenizer's special ids (and CI dimensions if ``tiny``)."""
    kwargs = copy.deepcopy(PUBLISHED[arch])
    model_type = kwargs.pop("model_type")
    n_tokens = len(tokenizer)
    if model_type == "t5":
        # Our tokenizer has T5's special ids (pad 0 = decoder start, eos 1): checked, not assumed.
        assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
        rows = 128 * math.ceil(n_tokens / 128) if tiny else max(kwargs["vocab_size"], n_tokens)
        kwargs["vocab_size"] = rows
        if tiny:
            kwargs.update(TINY_DIMS["t5"])
        return T5Config(**kwargs)
    eos = tokenizer.eos_token_id
    kwargs.update(
        vocab_size=n_tokens if tiny else max(kwargs["vocab_size"], n_tokens),
        bos_token_id=eos,
        eos_token_id=eos,
    )
    if tiny:
        kwargs.update(TINY_DIMS["gpt2"])
    return GPT2Config(**kwargs)


def build(
    arch: str, vocab_size: int | None = None, seed: int = 0, tiny: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """The randomly initialised model (``torch.manual_seed(seed)``) and its trained tokenizer."""
    if arch not in PUBLISHED:
        raise ValueError(f"unknown --arch {arch!r}; allowed: {', '.join(ARCHS)}")
    family = PUBLISHED[arch]["model_type"]
    size = DEFAULT_VOCAB[family] if vocab_size is None else vocab_size
    lines = corpus()
    tokenizer = t5_tokenizer(lines, size) if family == "t5" else gpt2_tokenizer(lines, size)
    config = model_config(arch, tokenizer, tiny)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = new_model(config, _ties_head(arch))
    return model, tokenizer


def make_model(
    arch: str, out: str | Path, vocab_size: int | None = None, seed: int = 0, tiny: bool = False
) -> Path:
    """Write ``out`` (config.json, model.safetensors, tokenizer.json, tokenizer_config.json,
    special_tokens_map.json), loadable by ``from_pretrained`` and hence by ``model.name=out``."""
    model, tokenizer = build(arch, vocab_size, seed, tiny)
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path), safe_serialization=True)
    tokenizer.save_pretrained(str(path))
    if not _ties_head(arch):  # transformers 5 writes T5's forced True (see new_model)
        config_json = path / "config.json"
        config_json.write_text(
            json.dumps({**json.loads(config_json.read_text()), "tie_word_embeddings": False}, indent=2) + "\n"
        )
    special = path / "special_tokens_map.json"
    if not special.exists():  # transformers 5 keeps these in tokenizer_config.json only; 4.x wrote both
        special.write_text(json.dumps(tokenizer.special_tokens_map, indent=2) + "\n")
    AutoConfig.from_pretrained(str(path))  # fail here, not in a training run, if the write is unreadable
    return path


def _writable_dir_error(out: Path, force: bool) -> str | None:
    if out.exists() and not out.is_dir():
        return f"--out {out} exists and is not a directory"
    if out.is_dir() and any(out.iterdir()) and not force:
        return f"--out {out} is not empty; pass --force to overwrite the model files in it"
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".make-model-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        return f"--out {out} is not writable: {e.strerror or e}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sac-glam make-model",
        description="Write a randomly initialised model with a published architecture and a tokenizer "
        "trained on Playground-Text, usable as model.name=DIR (no download).",
    )
    parser.add_argument("--arch", required=True, choices=ARCHS)
    parser.add_argument("--out", required=True, type=Path, help="directory to write (created)")
    parser.add_argument(
        "--vocab-size", type=int, default=None,
        help=f"trained tokenizer vocabulary (default: T5 shapes {DEFAULT_VOCAB['t5']}, gpt2 {DEFAULT_VOCAB['gpt2']}; "
        "the corpus saturates near 440)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--tiny", action="store_true", help="CI dimensions (d_model 64, 2 layers, 4 heads)")
    parser.add_argument("--force", action="store_true", help="write into a non-empty --out")
    args = parser.parse_args(argv)
    minimum = 3 if PUBLISHED[args.arch]["model_type"] == "t5" else 257
    if args.vocab_size is not None and args.vocab_size < minimum + 1:
        parser.error(f"--vocab-size {args.vocab_size} is too small for {args.arch}; at least {minimum + 1}")
    error = _writable_dir_error(args.out, args.force)
    if error:
        print(f"sac-glam make-model: {error}", file=sys.stderr)
        return 2
    path = make_model(args.arch, args.out, args.vocab_size, args.seed, args.tiny)
    model_cfg = AutoConfig.from_pretrained(str(path))
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    n_params = sum(p.numel() for p in _load_meta(path).parameters())
    lengths = {
        a: len(tokenizer(a, add_special_tokens=False)["input_ids"])
        for a in ("Go to red carnivorous", "Grasp", "Release")
    }
    print(f"wrote {path}: {args.arch}{' (tiny)' if args.tiny else ''}, {n_params / 1e6:.1f}M parameters, "
          f"model vocab {model_cfg.vocab_size}, tokenizer {len(tokenizer)} tokens; action tokens {lengths}")  # fmt: skip
    return 0


def _load_meta(path: Path) -> torch.nn.Module:
    """The model of ``path`` on the meta device (parameter count without loading the weights)."""

    config = AutoConfig.from_pretrained(str(path))
    tie = json.loads((path / "config.json").read_text()).get("tie_word_embeddings", True)
    with torch.device("meta"):
        return new_model(config, tie)


if __name__ == "__main__":
    sys.exit(main())
