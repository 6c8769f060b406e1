"""Action log-probabilities under the LLM (paper eq. 1-2), exact for mixed lengths and fast.

For a prompt ``p`` (goal + observation) and an admissible action ``a = w_1 .. w_L`` (its tokens, no
EOS appended, as in Lamorel and eq. 1)::

    logp(a | p) = sum_j log P_LLM(w_j | p, w_<j)                                   (eq. 1)
    pi(a | p)   = softmax over the admissible actions of logp                       (eq. 2, "sum")

How one call runs:

- Each prompt is encoded ONCE per call and reused by all its actions. Seq2seq: the encoder runs once
  per prompt, and so do the decoder's cross-attention K/V projections (indexed per (prompt, action)
  row); the decoder reads ``[decoder_start] + action``, one pass per distinct action length, so that
  no padded position is computed (issue 13, item 4). Causal: each prompt and its actions are one packed
  sequence (``llm/packed.py``: an action sees the prompt and itself, at positions continuing the
  prompt's), or without 4D masks the prompt's KV cache is indexed per row (``chunks.causal_chunk``).
  So a score never depends on which other prompts share the batch (Lamorel's causal scorer left-pads
  without position ids and gets this wrong on GPT-2, ``docs/lamorel_facts.md``).
- All (prompt, action) rows go through batched forwards of at most ``minibatch_size`` rows.
- One forward gives the decision logits ``D[r, j]`` = logits of the token that follows the prompt and
  the first ``j`` action tokens, for ``j = 0 .. L``, and the hidden states the critic/value heads read.
  Seq2seq: decoder logits at positions ``0..L`` (``0..L-1`` when neither ``constrained`` nor the
  action's hidden state needs the decision after the whole action). Causal: the prompt's last logits then the action
  rows' logits at positions ``0..L-1``. Every normalisation is a pure function of ``D``.

Tokenisation: prompts with the tokenizer's special tokens (T5 appends ``</s>`` to encoder inputs,
Llama prepends ``<s>``), actions without (no EOS: the score is over the action's own tokens). Token
ids are cached per tokenizer (``llm/token_cache.py``: actions and prompts repeat constantly).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from sac_glam.llm.chunks import causal_chunk, pad, seq2seq_chunk
from sac_glam.llm.models import Family, base_model, model_family
from sac_glam.llm.packed import causal_packed_chunk, packs_prompts
from sac_glam.llm.token_cache import tokenize_actions, tokenize_prompts

Normalization = Literal["sum", "mean", "constrained"]
HiddenRequest = Literal["none", "action", "prompt", "both"]


@dataclass
class ActionForward:
    """The outputs of one scoring forward over B prompts with up to A actions each.

    Padded entries (``mask_BA`` False) hold 0 in every float tensor (never -inf: ``0 * -inf`` is NaN
    in entropies and expectations); always read them through ``mask_BA``.
    """

    logp_BA: Tensor
    """(B, A) float: summed token log-probs of each action (eq. 1)."""
    log_pi_BA: Tensor
    """(B, A) float: log pi(a|s) under the chosen normalisation; exp sums to 1 over the real actions."""
    mask_BA: Tensor
    """(B, A) bool: True where an action exists."""
    n_tokens_BA: Tensor
    """(B, A) long: number of tokens of each action (0 where padded)."""
    action_hidden_BAH: Tensor | None = None
    """(B, A, H) last-layer hidden state after reading prompt + the whole action (seq2seq: decoder at the
    last action token with input ``[start] + action``; causal: at the last action token)."""
    prompt_hidden_BH: Tensor | None = None
    """(B, H) last-layer hidden state after the prompt alone (seq2seq: decoder at the start position;
    causal: at the last prompt token)."""


# ----------------------------------------------------------------------------------------------------
# Constrained decoding: allowed next tokens from the admissible actions' prefix tree


@dataclass(frozen=True)
class _AllowedSets:
    """For one state's A actions (max length L): which tokens decoding may choose at each step.

    ``ids_APK[a, j]`` lists the allowed tokens after action a's first j tokens (K padded, ``mask_APK``),
    for ``j = 0 .. L_a`` (P = L + 1 positions). ``end_A[a]`` says whether stopping after a is a real
    choice (a is a strict prefix of another action); the end of an action is the extra "token" EOS.
    """

    ids_APK: Tensor
    mask_APK: Tensor
    end_A: Tensor


@functools.lru_cache(maxsize=8192)
def _allowed_sets(seqs: tuple[tuple[int, ...], ...], eos_id: int | None) -> _AllowedSets:
    """Walk the prefix tree of ``seqs`` once (CPU, cached per action set)."""
    if len(set(seqs)) != len(seqs):
        raise ValueError(
            "constrained normalisation needs distinct token sequences per state; two admissible actions "
            "tokenise identically (duplicate action, or words unknown to the tokenizer)"
        )
    children: dict[tuple[int, ...], list[int]] = {}
    for seq in seqs:
        for j in range(len(seq)):
            nxt = children.setdefault(seq[:j], [])
            if seq[j] not in nxt:
                nxt.append(seq[j])
    complete = set(seqs)
    rows: list[list[list[int]]] = []
    end: list[bool] = []
    for seq in seqs:
        positions = []
        for j in range(len(seq) + 1):
            prefix = seq[:j]
            allowed = list(children.get(prefix, []))
            # A shorter admissible action ending here makes "stop" a choice at this step: the EOS
            # logit stands for it (only reached when one action is a strict prefix of another).
            if prefix in complete:
                if eos_id is None:
                    raise ValueError("constrained normalisation with prefix actions needs an EOS token")
                if prefix != seq or allowed:
                    allowed.append(eos_id)
            positions.append(allowed)
        rows.append(positions)
        end.append(bool(children.get(seq)))
    n_pos = max(len(s) for s in seqs) + 1
    k = max(len(allowed) for r in rows for allowed in r)
    # One tensor from nested lists (not one small copy per position: action sets rarely repeat
    # across a replay buffer, so this runs for most states of an update).
    k = max(k, 1)
    empty = [[0] * k] * n_pos
    ids = [[a + [0] * (k - len(a)) for a in positions] + empty[len(positions) :] for positions in rows]
    mask = [[[True] * len(a) + [False] * (k - len(a)) for a in positions] for positions in rows]
    mask = [m + [[False] * k] * (n_pos - len(m)) for m in mask]
    return _AllowedSets(torch.tensor(ids), torch.tensor(mask), torch.tensor(end, dtype=torch.bool))


# ----------------------------------------------------------------------------------------------------
# Batching plan


def _plan_chunks(n_actions: list[int], minibatch_size: int) -> list[list[tuple[int, int, int]]]:
    """Split the rows (prompt b, action a) into chunks of at most ``minibatch_size`` rows.

    A chunk is a list of segments ``(b, a_start, a_end)``. Rows keep their flat order; a prompt whose
    rows straddle two chunks is encoded in both (rare; it keeps every forward full).
    Example: n_actions=[3, 4], minibatch_size=5 -> [[(0,0,3),(1,0,2)], [(1,2,4)]].
    """
    if minibatch_size < 1:
        raise ValueError(f"minibatch_size must be >= 1, got {minibatch_size}")
    chunks: list[list[tuple[int, int, int]]] = []
    current: list[tuple[int, int, int]] = []
    rows = 0
    for b, n in enumerate(n_actions):
        start = 0
        while start < n:
            take = min(n - start, minibatch_size - rows)
            current.append((b, start, start + take))
            rows += take
            start += take
            if rows == minibatch_size:
                chunks.append(current)
                current, rows = [], 0
    if current:
        chunks.append(current)
    return chunks


# ----------------------------------------------------------------------------------------------------
# The public functions


def forward_actions(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    actions: list[list[str]],
    *,
    family: Family | None = None,
    minibatch_size: int = 512,
    normalization: Normalization = "sum",
    hidden: HiddenRequest = "none",
) -> ActionForward:
    """Score every admissible action of every prompt in one batched pass (see the module docstring).

    Works with gradients (updates: LoRA/LLM weights get gradients) and under ``torch.no_grad`` (acting).
    ``family`` defaults to ``model.config.is_encoder_decoder``. Every prompt needs >= 1 action.
    """
    if len(prompts) != len(actions):
        raise ValueError(f"{len(prompts)} prompts but {len(actions)} action lists")
    if normalization not in ("sum", "mean", "constrained"):
        raise ValueError(f"unknown normalization {normalization!r}")
    if hidden not in ("none", "action", "prompt", "both"):
        raise ValueError(f"unknown hidden request {hidden!r}")
    for b, acts in enumerate(actions):
        if not acts:
            raise ValueError(f"prompt {b} has no admissible action")
    family = family or model_family(model)
    net = base_model(model)
    device = net.device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    want_action = hidden in ("action", "both")
    want_prompt = hidden in ("prompt", "both")

    n_actions = [len(a) for a in actions]
    B, A = len(prompts), max(n_actions)
    prompt_ids = tokenize_prompts(tokenizer, prompts)
    flat_actions = [a for acts in actions for a in acts]
    action_ids = tokenize_actions(tokenizer, flat_actions)
    row_offset = [0]
    for n in n_actions:
        row_offset.append(row_offset[-1] + n)
    lengths_all = torch.tensor([len(t) for t in action_ids], dtype=torch.long)
    # Flat (B*A) slot of every row, to scatter row results into (B, A): row of (b, a) -> b*A + a.
    slot_R = torch.cat([torch.arange(n) + b * A for b, n in enumerate(n_actions)]).to(device)

    allowed: list[_AllowedSets] | None = None
    if normalization == "constrained":
        allowed = [
            _allowed_sets(tuple(action_ids[row_offset[b] : row_offset[b + 1]]), tokenizer.eos_token_id)
            for b in range(B)
        ]

    logp_parts, term_parts, action_h_parts = [], [], []
    prompt_h_BH: Tensor | None = None
    prompt_h_rows: list[Tensor] = []
    prompt_h_idx: list[int] = []
    for chunk in _plan_chunks(n_actions, minibatch_size):
        seg_rows = [a1 - a0 for _, a0, a1 in chunk]
        rows = [row_offset[b] + a for b, a0, a1 in chunk for a in range(a0, a1)]
        row_prompt_R = torch.repeat_interleave(torch.arange(len(chunk)), torch.tensor(seg_rows)).to(device)
        seg_first_row_S = (torch.tensor([0, *seg_rows[:-1]]).cumsum(0)).to(device)
        ids_RL, mask_RL = pad([action_ids[r] for r in rows], pad_id)
        ids_RL, mask_RL = ids_RL.to(device), mask_RL.to(device)
        lengths_R = lengths_all[rows].to(device)
        chunk_prompts = [prompt_ids[b] for b, _, _ in chunk]
        if family == "seq2seq":
            out = seq2seq_chunk(
                net, chunk_prompts, row_prompt_R, ids_RL, lengths_R, seg_first_row_S,
                pad_id, want_action, want_prompt, want_action or normalization == "constrained",
            )  # fmt: skip
        elif packs_prompts(net):
            out = causal_packed_chunk(net, chunk_prompts, seg_rows, [action_ids[r] for r in rows],
                                      ids_RL.shape[1], pad_id, want_action, want_prompt)  # fmt: skip
        else:
            out = causal_chunk(
                net, chunk_prompts, row_prompt_R, ids_RL, mask_RL, lengths_R,
                torch.arange(len(chunk), device=device), pad_id, want_action, want_prompt,
            )  # fmt: skip
        logits_RPV = out.logits_RPV.float()
        logp_parts.append(summed_token_logp(logits_RPV, ids_RL, mask_RL))
        if allowed is not None:
            term_parts.append(
                _constrained_log_pi(logits_RPV, ids_RL, mask_RL, lengths_R, chunk, allowed, tokenizer)
            )
        if out.action_hidden_RH is not None:
            action_h_parts.append(out.action_hidden_RH)
        if out.prompt_hidden_SH is not None:
            for s, (b, a0, _) in enumerate(chunk):
                if a0 == 0:  # the segment holding a prompt's first action reports its prompt state
                    prompt_h_rows.append(out.prompt_hidden_SH[s])
                    prompt_h_idx.append(b)

    mask_BA = rows_to_BA(torch.ones(len(slot_R), dtype=torch.bool, device=device), slot_R, B, A)
    logp_BA = rows_to_BA(torch.cat(logp_parts), slot_R, B, A)
    n_tokens_BA = rows_to_BA(lengths_all.to(device), slot_R, B, A)
    if normalization == "constrained":
        log_pi_BA = rows_to_BA(torch.cat(term_parts), slot_R, B, A)
    else:
        log_pi_BA = normalize_scores(logp_BA, mask_BA, n_tokens_BA, normalization)

    action_hidden_BAH = None
    if want_action:
        h_RH = torch.cat(action_h_parts)
        action_hidden_BAH = h_RH.new_zeros(B * A, h_RH.shape[-1]).index_copy(0, slot_R, h_RH)
        action_hidden_BAH = action_hidden_BAH.view(B, A, -1)
    if want_prompt:
        order = torch.tensor(prompt_h_idx, device=device).argsort()
        prompt_h_BH = torch.stack(prompt_h_rows).index_select(0, order)
    return ActionForward(
        logp_BA=logp_BA,
        log_pi_BA=log_pi_BA,
        mask_BA=mask_BA,
        n_tokens_BA=n_tokens_BA,
        action_hidden_BAH=action_hidden_BAH,
        prompt_hidden_BH=prompt_h_BH,
    )


def summed_token_logp(logits_RPV: Tensor, ids_RL: Tensor, mask_RL: Tensor) -> Tensor:
    """(R,) eq. 1 per row: log P(w_j | p, w_<j) = logit(w_j) - logsumexp(logits), summed over the real
    tokens (``mask_RL``) of each row's action ``ids_RL``; ``logits_RPV`` position j predicts token j."""
    L = ids_RL.shape[1]
    tok_logit_RL = logits_RPV[:, :L].gather(-1, ids_RL[..., None]).squeeze(-1)
    # The normaliser over the vocabulary at real positions only (padding can be most of (R, L)).
    lse_RL = torch.zeros_like(tok_logit_RL)
    lse_RL[mask_RL] = torch.logsumexp(logits_RPV[:, :L][mask_RL], dim=-1)
    return torch.where(mask_RL, tok_logit_RL - lse_RL, 0.0).sum(1)


def rows_to_BA(values_R: Tensor, slot_R: Tensor, B: int, A: int) -> Tensor:
    """Scatter per-row values into (B, A) at flat slots ``slot_R`` (row of (b, a) -> b * A + a); 0 elsewhere."""
    return values_R.new_zeros(B * A).index_copy(0, slot_R, values_R).view(B, A)


def normalize_scores(logp_BA: Tensor, mask_BA: Tensor, n_tokens_BA: Tensor, normalization: str) -> Tensor:
    """log pi from summed token log-probs: ``sum`` (eq. 2) or ``mean`` (length-normalised) softmax over
    each state's real actions. (``constrained`` needs the logits: :func:`_constrained_log_pi`.)"""
    if normalization == "sum":
        return masked_log_softmax(logp_BA, mask_BA)
    if normalization == "mean":
        return masked_log_softmax(logp_BA / n_tokens_BA.clamp(min=1), mask_BA)
    raise ValueError(f"normalize_scores: {normalization!r} is not 'sum' or 'mean'")


def _constrained_log_pi(
    logits_RPV: Tensor,
    ids_RL: Tensor,
    mask_RL: Tensor,
    lengths_R: Tensor,
    chunk: list[tuple[int, int, int]],
    allowed: list[_AllowedSets],
    tokenizer: Any,
) -> Tensor:
    """log pi(a) = sum_j [logit(w_j) - logsumexp(logits of the tokens allowed after w_<j)]
    + [logit(EOS) - logsumexp(allowed after a)] when stopping after a is a choice (a is a strict prefix
    of another action). Sums to 1 over the admissible actions by construction (no final softmax)."""
    n_rows, n_pos, _ = logits_RPV.shape
    device = logits_RPV.device
    k = max(allowed[b].ids_APK.shape[2] for b, _, _ in chunk)
    ids_RPK = torch.zeros(n_rows, n_pos, k, dtype=torch.long)
    amask_RPK = torch.zeros(n_rows, n_pos, k, dtype=torch.bool)
    end_R = torch.zeros(n_rows, dtype=torch.bool)
    r = 0
    for b, a0, a1 in chunk:  # one slice copy per state, not per token
        s = allowed[b]
        # The chunk's positions cover its own rows' actions only: when it holds a state's short
        # actions alone (a state straddling two chunks), the state's allowed sets are longer, and the
        # positions past these rows' ends hold nothing for them (issue 13, bug 3).
        p, kk = min(s.ids_APK.shape[1], n_pos), s.ids_APK.shape[2]
        ids_RPK[r : r + a1 - a0, :p, :kk] = s.ids_APK[a0:a1, :p]
        amask_RPK[r : r + a1 - a0, :p, :kk] = s.mask_APK[a0:a1, :p]
        end_R[r : r + a1 - a0] = s.end_A[a0:a1]
        r += a1 - a0
    # Positions with nothing allowed (past an action's end) get one dummy entry: their term is masked
    # out below, and a finite logsumexp keeps NaN out of the backward pass (0 * NaN = NaN).
    amask_RPK[..., 0] |= ~amask_RPK.any(-1)
    ids_RPK, amask_RPK, end_R = ids_RPK.to(device), amask_RPK.to(device), end_R.to(device)
    allowed_logits = logits_RPV.gather(-1, ids_RPK).masked_fill(~amask_RPK, float("-inf"))
    lse_RP = torch.logsumexp(allowed_logits, dim=-1)
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    # Chosen "token" per position: w_j for j < L, EOS at j = L (counted only when end_R).
    chosen_RP = torch.cat([ids_RL, ids_RL.new_full((n_rows, 1), eos)], dim=1)
    chosen_RP.scatter_(1, lengths_R[:, None], eos)
    term_mask_RP = torch.cat([mask_RL, torch.zeros_like(mask_RL[:, :1])], dim=1)
    term_mask_RP.scatter_(1, lengths_R[:, None], end_R[:, None])
    chosen_logit_RP = logits_RPV.gather(-1, chosen_RP[..., None]).squeeze(-1)
    return torch.where(term_mask_RP, chosen_logit_RP - lse_RP, 0.0).sum(1)


def masked_log_softmax(x_BA: Tensor, mask_BA: Tensor) -> Tensor:
    """log_softmax over the real entries of each row; padded entries are 0 (not -inf)."""
    logits = x_BA.masked_fill(~mask_BA, float("-inf"))
    return torch.where(mask_BA, torch.log_softmax(logits, dim=-1), 0.0)


def score_actions(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    actions: list[list[str]],
    minibatch_size: int = 512,
) -> list[Tensor]:
    """Per prompt, a tensor (n_actions,) of summed action-token log-probs (eq. 1).

    The family comes from ``model.config.is_encoder_decoder`` (also through peft wrappers).
    """
    fwd = forward_actions(model, tokenizer, prompts, actions, minibatch_size=minibatch_size)
    return [fwd.logp_BA[b, : len(acts)] for b, acts in enumerate(actions)]
