"""Decoder-only scoring in ONE forward per chunk: each prompt packed with its actions in one sequence.

:func:`~sac_glam.llm.chunks.causal_chunk` runs the prompts, copies their KV cache once per (prompt,
action) row (rows x layers x T x d floats, and as many again in the backward) and runs the action rows
on top: at the tiny presets' size those copies and the second forward were a fifth of an update.
Here a chunk segment (one prompt and its rows' actions) is one sequence ``prompt, action_1, action_2,
...`` without padding inside it, and a 4D attention mask lets each action token see the prompt and its
own action's earlier tokens only, at positions that continue the prompt's. Every token then attends to
the same keys, at the same positions, as in :func:`causal_chunk`: the scores are the same function
(the tests hold both to 1e-5, gradients included), computed with one forward and no copies.

Example: prompt ``p0 p1`` with actions ``[a]`` and ``[b0, b1]`` -> tokens ``p0 p1 a b0 b1`` at positions
``0 1 2 2 3``; ``b0`` sees ``p0 p1 b0`` (not ``a``); row 2's decisions read the logits at sequence
indices 1 (after ``p1``), 3 (after ``b0``) and 4 (after ``b1``).
"""

from __future__ import annotations

from typing import Any

import torch

from sac_glam.llm.chunks import ChunkOut, pad


def packs_prompts(model: Any) -> bool:
    """Whether :func:`causal_packed_chunk` can run ``model``: its attention must take a 4D mask as
    given (transformers' ``sdpa`` and ``eager`` do; flash-attention reads padding only)."""
    return getattr(model.config, "_attn_implementation", "eager") in ("sdpa", "eager")


def _packed_mask(model: Any, group_SN: torch.Tensor) -> torch.Tensor:
    """(S, 1, N, N) mask: key k visible to query q iff k is real, k <= q, and k is in the prompt
    (group 0) or in q's own action (same group). A pad query (group -1) sees itself: a fully masked
    row is NaN in SDPA (see ``chunks._attention_4d``). Bool for SDPA, additive float for eager."""
    n = group_SN.shape[1]
    q_N1, k_1N = torch.arange(n)[:, None], torch.arange(n)[None, :]
    g_q, g_k = group_SN[:, :, None], group_SN[:, None, :]
    allowed = ((g_k >= 0) & (k_1N <= q_N1) & ((g_k == 0) | (g_k == g_q))) | (k_1N == q_N1)
    allowed = allowed[:, None]
    if getattr(model.config, "_attn_implementation", "eager") == "sdpa":
        return allowed
    dtype = model.dtype if model.dtype.is_floating_point else torch.float32
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)


def causal_packed_chunk(
    model: Any,
    prompt_ids: list[list[int]],
    seg_rows: list[int],
    action_ids_R: list[tuple[int, ...]],
    width: int,
    pad_id: int,
    want_action: bool,
    want_prompt: bool,
) -> ChunkOut:
    """One chunk's decision logits (R, width + 1, V) and hidden states, as :func:`causal_chunk` returns
    them: segment s holds prompt ``prompt_ids[s]`` and the next ``seg_rows[s]`` rows of
    ``action_ids_R``; ``width`` is the rows' longest action. Positions past a row's end repeat its
    last decision (finite; the scorer reads them through masks)."""
    device = model.device
    seqs: list[list[int]] = []
    groups: list[int] = []  # per real token: 0 in the prompt, k in the segment's k-th action
    positions: list[int] = []
    start_R: list[int] = []  # where each row's action starts in its sequence
    r = 0
    for p, n_rows in zip(prompt_ids, seg_rows, strict=True):
        seq, t = list(p), len(p)
        groups += [0] * t
        positions += range(t)
        for k in range(1, n_rows + 1):
            a = action_ids_R[r]
            start_R.append(len(seq))
            seq += a
            groups += [k] * len(a)
            positions += range(t, t + len(a))
            r += 1
        seqs.append(seq)
    ids_SN, real_SN = pad(seqs, pad_id)
    group_SN = torch.full(ids_SN.shape, -1, dtype=torch.long)
    group_SN[real_SN] = torch.tensor(groups, dtype=torch.long)
    pos_SN = torch.zeros(ids_SN.shape, dtype=torch.long)
    pos_SN[real_SN] = torch.tensor(positions, dtype=torch.long)

    # Sequence index of decision j of row r: the prompt's last token for j = 0, action token j - 1 after.
    seg_R = torch.repeat_interleave(torch.arange(len(seg_rows)), torch.tensor(seg_rows))
    start_R_t = torch.tensor(start_R, dtype=torch.long)
    last_R = start_R_t + torch.tensor([len(a) for a in action_ids_R], dtype=torch.long) - 1
    prompt_last_S = torch.tensor([len(p) - 1 for p in prompt_ids], dtype=torch.long)
    idx_RP = torch.minimum(start_R_t[:, None] + torch.arange(width + 1)[None, :] - 1, last_R[:, None])
    idx_RP[:, 0] = prompt_last_S[seg_R]

    ids_SN, att, pos_SN = ids_SN.to(device), _packed_mask(model, group_SN).to(device), pos_SN.to(device)
    seg_R, idx_RP, last_R = seg_R.to(device), idx_RP.to(device), last_R.to(device)
    prompt_last_S = prompt_last_S.to(device)
    # Only a window of each sequence is read: its prompt's last token and its actions (every index
    # from ``prompt_last_S`` on). ``query_SQ`` holds it, shifted to start at 0, past a sequence's end
    # repeating its last token.
    n_query = int((real_SN.sum(1) - prompt_last_S.cpu()).max())
    lens_S = real_SN.sum(1).to(device)
    query_SQ = torch.minimum(
        prompt_last_S[:, None] + torch.arange(n_query, device=device), lens_S[:, None] - 1
    )
    hidden_SQH: torch.Tensor | None
    if gpt2_last_layer_at(model):
        logits_SQV, hidden_SQH = _gpt2_at_queries(model, ids_SN, att, pos_SN, query_SQ)
    else:
        out = model(input_ids=ids_SN, attention_mask=att, position_ids=pos_SN, use_cache=False,
                    output_hidden_states=want_action or want_prompt, return_dict=True)  # fmt: skip
        rows_S1 = torch.arange(len(seg_rows), device=device)[:, None]
        logits_SQV = out.logits[rows_S1, query_SQ]
        hidden_SQH = out.hidden_states[-1][rows_S1, query_SQ] if want_action or want_prompt else None
    offset_R = prompt_last_S[seg_R]
    logits_RPV = logits_SQV[seg_R[:, None], idx_RP - offset_R[:, None]]
    action_h = prompt_h = None
    if want_action:
        assert hidden_SQH is not None
        action_h = hidden_SQH[seg_R, last_R - offset_R]
    if want_prompt:
        assert hidden_SQH is not None
        prompt_h = hidden_SQH[:, 0]
    return ChunkOut(logits_RPV, action_h, prompt_h)


# ----------------------------------------------------------------------------------------------------
# GPT-2: the last layer at the read positions only


def gpt2_last_layer_at(model: Any) -> bool:
    """Whether :func:`_gpt2_at_queries` applies: transformers' GPT-2 (LoRA and 4-bit layers included,
    they are its own modules) with SDPA attention, no cross-attention and no model parallelism."""
    from transformers import GPT2LMHeadModel

    if not isinstance(model, GPT2LMHeadModel) or model.config._attn_implementation != "sdpa":
        return False
    tr = model.transformer
    # ``model_parallel`` (the deprecated ``parallelize()``) is gone from transformers 5's GPT2Model.
    parallel = getattr(tr, "model_parallel", False)
    return not (model.config.add_cross_attention or tr.gradient_checkpointing or parallel)


def _gpt2_at_queries(
    model: Any, ids_SN: torch.Tensor, att_S1NN: torch.Tensor, pos_SN: torch.Tensor, query_SQ: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, last hidden state) at sequence indices ``query_SQ`` only: every layer but the last runs
    on all N positions (transformers' own forward), the last one computes keys and values at all N but
    its attention output, MLP, final layer norm and LM head at the Q query positions alone (GPT2Block
    and GPT2Attention's forward, restricted to those queries: the same operations in the same order).
    The scorer reads 1 + (action tokens) of ~50 positions: the last layer shrinks to about a third."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    tr = model.transformer
    blocks, ln_f = tr.h, tr.ln_f
    tr.h, tr.ln_f = torch.nn.ModuleList(list(blocks)[:-1]), torch.nn.Identity()
    try:
        x_SND = tr(input_ids=ids_SN, attention_mask=att_S1NN, position_ids=pos_SN, use_cache=False,
                   return_dict=True).last_hidden_state  # fmt: skip
    finally:
        tr.h, tr.ln_f = blocks, ln_f
    block = blocks[-1]
    attn = block.attn
    rows_S1 = torch.arange(ids_SN.shape[0], device=ids_SN.device)[:, None]
    q_SND, k_SND, v_SND = attn.c_attn(block.ln_1(x_SND)).split(attn.split_size, dim=2)
    q_SQD = q_SND[rows_S1, query_SQ]

    def heads(t: torch.Tensor) -> torch.Tensor:  # (S, T, D) -> (S, heads, T, head_dim)
        return t.view(*t.shape[:-1], -1, attn.head_dim).transpose(1, 2)

    a_SQ, _ = sdpa_attention_forward(
        attn, heads(q_SQD), heads(k_SND), heads(v_SND), att_S1NN[rows_S1, 0, query_SQ][:, None],
        dropout=attn.attn_dropout.p if attn.training else 0.0, is_causal=False,
    )  # fmt: skip
    h_SQD = attn.resid_dropout(attn.c_proj(a_SQ.reshape(*a_SQ.shape[:-2], -1).contiguous()))
    h_SQD = h_SQD + x_SND[rows_S1, query_SQ]
    h_SQD = h_SQD + block.mlp(block.ln_2(h_SQD))
    hidden_SQD = ln_f(h_SQD)
    return model.lm_head(hidden_SQD), hidden_SQD
