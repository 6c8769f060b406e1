"""Offline language pretraining of the tiny presets on Playground-Text's own text (opt-in).

Why: the paper's agent starts from Flan-T5, which already relates the words of an instruction to the
words of a scene; a randomly initialised tiny model does not, and RL then has to discover from a 0/1
reward alone that ``Go to red tomato`` is what matters for ``Grasp red tomato`` (README, "CPU
presets"). ``model.tiny.pretrain_steps > 0`` gives the tiny models a small, policy-free analogue of
that prior, trained on prompts from random-policy rollouts with two text objectives, half each:

- masked word (T5/BERT denoising): one word of the goal line is replaced by ``<unk>`` and predicted;
  the goal's objects can be read from the scene line (``Grasp <unk> tomato`` -> ``red``);
- goal copy (instruction following in small): the decoder writes the goal text of the prompt.

No action, reward or success is ever shown: the model learns the language of the environment, not how
to act in it. The weights depend only on the preset, ``TinyModelConfig`` and its ``pretrain_*`` fields
(never on the run's seed or environment), so every run, seed and algorithm starts from the same model,
as every run of the paper starts from the same Flan-T5 checkpoint. Train goals only: the held-out test
goals stay unseen.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sac_glam.config import EnvConfig, TinyModelConfig
from sac_glam.envs.playground_text import PlaygroundText


def rollout_prompts(n_prompts: int, seed: int) -> list[str]:
    """Prompts from random-policy episodes over N = 2..6 objects and every train goal type."""
    rng = np.random.default_rng(seed)
    # Sequential goals need at least 4 objects (docs/environment.md); 2 and 3 get simple goals.
    envs = {
        n: PlaygroundText(EnvConfig(n_objects=n, sequential_goals=n >= 4), split="train") for n in range(2, 7)
    }
    prompts: list[str] = []
    while len(prompts) < n_prompts:
        env = envs[int(rng.integers(2, 7))]
        env.reset(seed=int(rng.integers(2**31)))
        done = False
        while not done and len(prompts) < n_prompts:
            prompts.append(env.prompt)
            _, _, terminated, truncated, _ = env.step_index(int(rng.integers(len(env.admissible_codes))))
            done = terminated or truncated
    return prompts


def mask_one_word(prompt: str, rng: np.random.Generator, mask_token: str) -> tuple[str, str]:
    """``prompt`` with one word of its goal line (the first, ``Goal: ...``) replaced by ``mask_token``, and
    that word. Only the goal: its objects can be read from the scene line, while a masked scene word is
    mostly an unpredictable distractor."""
    goal_line, rest = prompt.split("\n", 1)
    words = goal_line.split(" ")
    j = 1 + int(rng.integers(len(words) - 1))  # not the "Goal:" header
    target, words[j] = words[j], mask_token
    return " ".join(words) + "\n" + rest, target


def example(prompt: str, rng: np.random.Generator, mask_token: str) -> tuple[str, str]:
    """One (source, target) pair: half masked-word (the masked prompt, the word), half goal copy
    (the prompt, its goal text), the copy being the instruction-following prior of Flan-T5 in small."""
    if rng.random() < 0.5:
        return mask_one_word(prompt, rng, mask_token)
    return prompt, prompt.split("\n", 1)[0].removeprefix("Goal: ")


def pretrain_tiny(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, tiny: TinyModelConfig
) -> list[float]:
    """Train ``model`` in place for ``tiny.pretrain_steps`` Adam steps; returns the loss per step.

    Seq2seq: the encoder reads the source, the decoder is trained on the target (teacher forcing).
    Causal: the model reads ``source </s> target`` and is trained on the target's tokens only.
    """
    rng = np.random.default_rng(tiny.pretrain_seed)
    prompts = rollout_prompts(tiny.pretrain_corpus, tiny.pretrain_seed)
    opt = torch.optim.Adam(model.parameters(), lr=tiny.pretrain_lr)
    is_seq2seq = bool(model.config.is_encoder_decoder)
    unk, eos = tokenizer.unk_token, tokenizer.eos_token
    assert unk is not None and eos is not None
    kw = {"return_tensors": "pt", "padding": True, "return_token_type_ids": False}
    losses = []
    model.train()
    for _ in range(tiny.pretrain_steps):
        pairs = [
            example(prompts[int(k)], rng, unk) for k in rng.integers(len(prompts), size=tiny.pretrain_batch)
        ]
        if is_seq2seq:
            enc = tokenizer([src for src, _ in pairs], **kw)
            tgt = tokenizer([t for _, t in pairs], add_special_tokens=False, **kw)
            labels = tgt["input_ids"].masked_fill(tgt["attention_mask"] == 0, -100)
            loss = model(**enc, labels=labels).loss
        else:
            src = tokenizer([f"{s} {eos}" for s, _ in pairs], add_special_tokens=False)["input_ids"]
            tgt = tokenizer([t for _, t in pairs], add_special_tokens=False)["input_ids"]
            seqs = [a + b for a, b in zip(src, tgt, strict=True)]
            width = max(map(len, seqs))
            ids = torch.full((len(seqs), width), tokenizer.pad_token_id)
            labels = torch.full((len(seqs), width), -100)
            for r, (a, b) in enumerate(zip(src, tgt, strict=True)):
                ids[r, : len(a) + len(b)] = torch.tensor(a + b)
                labels[r, len(a) : len(a) + len(b)] = torch.tensor(b)
            loss = model(
                input_ids=ids,
                attention_mask=(labels != -100) | (ids != tokenizer.pad_token_id),
                labels=labels,
            ).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


def main(argv: list[str] | None = None) -> int:
    """``sac-glam pretrain``: pretrain a config's tiny model once and write its weights file."""
    import argparse
    import time

    from sac_glam.config import ConfigError, load_config
    from sac_glam.envs.goals import vocabulary
    from sac_glam.llm import models
    from sac_glam.llm.tokenizer import build_word_tokenizer

    parser = argparse.ArgumentParser(
        prog="sac-glam pretrain",
        description="Text-pretrain the tiny model of a config (model.tiny.pretrain_steps > 0) and write its "
        "weights where runs look for them: the user cache (default) or --out (sac_glam/assets/pretrained "
        "ships them with the package). Runs of the same model.* then start from that file.",
    )
    parser.add_argument("--config-name", default="sac_glam_her_cpu", help="a config of lamorel_configs/")
    parser.add_argument("--out", type=Path, default=None, help="folder to write (default: $SAC_GLAM_CACHE)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument(
        "overrides", nargs="*", help="key=value overrides (model.tiny.pretrain_steps=1500 ...)"
    )
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config_name, args.overrides)
    except ConfigError as e:
        print(f"sac-glam pretrain: {e}", file=sys.stderr)
        return 2
    if cfg.model.name not in models.TINY_PRESETS or cfg.model.tiny.pretrain_steps <= 0:
        print(f"sac-glam pretrain: nothing to pretrain: model.name={cfg.model.name!r}, model.tiny.pretrain_steps="
              f"{cfg.model.tiny.pretrain_steps} (a tiny preset, {sorted(models.TINY_PRESETS)}, with "
              "model.tiny.pretrain_steps > 0 is needed)", file=sys.stderr)  # fmt: skip
        return 2
    torch.set_num_threads(args.threads)
    tokenizer = build_word_tokenizer(vocabulary())
    cached = models.pretrained_cache_path(cfg.model.name, cfg.model.tiny, tokenizer)
    path = args.out / cached.name if args.out else cached
    found = (path if path.is_file() else None) if args.out else models.pretrained_weights_file(path)
    if found is not None:
        print(f"{found}: already there (delete it, or pass --out, to pretrain again)")
        return 0
    tiny = cfg.model.tiny
    print(
        f"pretraining {cfg.model.name} {tiny}: {tiny.pretrain_steps} steps on {args.threads} thread(s)",
        flush=True,
    )
    t0 = time.perf_counter()
    model, losses = models.pretrain_from_seed(cfg.model.name, tiny, tokenizer, pretrain_tiny)
    tail = float(np.mean(losses[-50:]))
    print(
        f"loss {losses[0]:.3f} -> {tail:.3f} (mean of the last 50 steps) in {time.perf_counter() - t0:.0f} s"
    )
    models.save_atomically({k: v.detach().clone() for k, v in model.state_dict().items()}, path)
    print(path)
    return 0
