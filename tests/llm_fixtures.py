"""Shared helpers for the LLM tests: tiny offline models, sample prompts/actions, brute-force scores."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may reach the hub

import dataclasses
from typing import Any

import torch

from sac_glam.config import ModelConfig, TinyModelConfig
from sac_glam.llm.models import LoadedModel, base_model, load_model

TINY = TinyModelConfig(d_model=64, n_layers=2, n_heads=4, d_ff=128)

SMALL_TINY_MODEL = [
    "model.tiny.d_model=32",
    "model.tiny.n_layers=1",
    "model.tiny.d_ff=64",
    "model.tiny.pretrain_steps=0",
]
"""Config overrides shrinking the presets' tiny model to one block of width 32, from a random start (the
presets' text-pretrained start would pretrain at test time): the tests' training runs of a few seconds."""

PROMPTS = [
    "Goal: Grow green mouse then grow blue rose\nYou see: green water, green mouse, blue rose\n"
    "You are on: nothing\nYou are holding: nothing\nYou have grown: nothing\nAction:",
    "Goal: Grasp red cat\nYou see: red cat\nYou are on: nothing\nYou are holding: nothing\n"
    "You have grown: nothing\nAction:",
    "Goal: Grasp any animal\nYou see: blue door, red cat, green tree, blue sofa, red food, green water\n"
    "You are on: red cat\nYou are holding: green water\nYou have grown: green tree, red cat\nAction:",
]
ACTIONS = [
    ["Go to green water", "Go to green mouse", "Go to blue rose", "Grasp", "Release"],
    ["Grasp", "Go to red cat"],
    ["Release", "Go to blue door", "Grasp", "Go to red food", "Go to green water", "Go to blue sofa"],
]


def tiny_model(name: str, seed: int = 0, **overrides: Any) -> LoadedModel:
    """A seeded tiny model (``tiny-t5`` or ``tiny-causal``); ``overrides`` go to :class:`ModelConfig`."""
    torch.manual_seed(seed)
    cfg = dataclasses.replace(ModelConfig(name=name, tiny=TINY), **overrides)
    return load_model(cfg)


def brute_force_token_logprobs(
    lm: LoadedModel, prompt: str, action: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probs of the action's tokens, next-token logits at each decision j=0..L) for ONE pair,
    unpadded, with a plain full forward (no cache, no masks)."""
    net = base_model(lm.model)
    tok = lm.tokenizer
    p = tok(prompt, add_special_tokens=True)["input_ids"]
    a = tok(action, add_special_tokens=False)["input_ids"]
    if lm.family == "seq2seq":
        dec = [net.config.decoder_start_token_id, *a]
        logits = net(input_ids=torch.tensor([p]), decoder_input_ids=torch.tensor([dec])).logits[0]
        decision = logits  # (L+1, V)
    else:
        logits = net(input_ids=torch.tensor([p + a])).logits[0]
        decision = logits[len(p) - 1 :]  # (L+1, V)
    logp = torch.log_softmax(decision[: len(a)], -1).gather(-1, torch.tensor(a)[:, None]).squeeze(-1)
    return logp, decision


def brute_force_constrained(lm: LoadedModel, prompt: str, actions: list[str]) -> torch.Tensor:
    """pi(a) under decoding restricted to the admissible actions, by explicit trie walk per pair."""
    tok = lm.tokenizer
    seqs = [tuple(tok(a, add_special_tokens=False)["input_ids"]) for a in actions]
    eos = tok.eos_token_id
    out = []
    for seq in seqs:
        _, decision = brute_force_token_logprobs(lm, prompt, actions[seqs.index(seq)])
        total = torch.zeros(())
        for j in range(len(seq) + 1):
            prefix = seq[:j]
            options = sorted({s[j] for s in seqs if len(s) > j and s[:j] == prefix})
            if prefix in seqs:
                options.append(eos)  # stopping here is a choice
            chosen = seq[j] if j < len(seq) else eos
            if j == len(seq) and options == [eos]:
                continue  # only "stop" remains: probability 1
            lse = torch.logsumexp(decision[j, options], 0)
            total = total + decision[j, chosen] - lse
        out.append(total)
    return torch.stack(out).exp()
