"""One chunk of (prompt, action) rows through the LLM: decision logits and hidden states, per model family.

``llm/scoring.py`` plans the chunks and turns their logits into log-probs (paper eq. 1-2); this module
holds the two forwards it calls, :func:`seq2seq_chunk` (encoder once per prompt, cross-attention K/V
once per prompt, one decoder pass per distinct action length) and :func:`causal_chunk` (the prompt's KV
cache once per prompt, the action rows on top of it with explicit positions). The module docstring of
``llm/scoring.py`` explains why each is exact.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from transformers.modeling_outputs import BaseModelOutput


def pad(seqs: list[Any], pad_id: int, left: bool = False) -> tuple[Tensor, Tensor]:
    """(N, T) ids and bool mask for token lists, right- (default) or left-padded.

    One tensor from the flat concatenation, placed by a boolean mask (row-major order matches the
    concatenation), instead of one small tensor per row.
    Example: [[5, 6, 7], [8]] right-padded -> ids [[5, 6, 7], [p, p, p]] with 8 at [1, 0]."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    width = int(lengths.max())
    cols = torch.arange(width)[None, :]
    mask = cols >= (width - lengths)[:, None] if left else cols < lengths[:, None]
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    ids[mask] = torch.tensor([t for s in seqs for t in s], dtype=torch.long)
    return ids, mask


# ----------------------------------------------------------------------------------------------------
# Forwards: one chunk of rows -> decision logits (R, L+1, V) and hidden states


@dataclass
class ChunkOut:
    logits_RPV: Tensor
    """Decision logits: position j = next-token logits after the prompt and j action tokens."""
    action_hidden_RH: Tensor | None
    prompt_hidden_SH: Tensor | None
    """One row per segment of the chunk."""


class _RowsOfPrompt(torch.nn.Module):
    """Stands in for a cross-attention K or V projection during decoder passes: the projection of each
    prompt's encoder output, computed once, read per (prompt, action) row (``rows.index``)."""

    def __init__(self, per_prompt_PTD: Tensor, rows: _RowIndex) -> None:
        super().__init__()
        self.per_prompt_PTD = per_prompt_PTD
        self.rows = rows

    def forward(self, _encoder_rows: Tensor) -> Tensor:
        return self.per_prompt_PTD.index_select(0, self.rows.index)


@dataclass
class _RowIndex:
    index: Tensor
    """(R,) the prompt of each row of the current decoder pass."""


def _cross_attentions(decoder: Any) -> list[Any] | None:
    """The decoder's cross-attention modules when they have T5's ``k``/``v`` projections, else None."""
    attns = []
    for block in getattr(decoder, "block", None) or []:
        layers = getattr(block, "layer", [])
        attn = getattr(layers[1], "EncDecAttention", None) if len(layers) > 1 else None
        if attn is None or not (hasattr(attn, "k") and hasattr(attn, "v")):
            return None
        attns.append(attn)
    return attns or None


@contextlib.contextmanager
def _cross_kv_once(model: Any, enc_PTH: Tensor, rows: _RowIndex) -> Iterator[None]:
    """Each decoder layer's cross-attention keys and values, once per prompt instead of once per row.

    A row's cross-attention K/V are a linear map of its prompt's encoder output: projecting the
    per-row copies costs 2 x layers x rows x T x d^2, about an encoder's cost again for 8 actions.
    Here the projections (LoRA/4-bit layers included: the model's own modules) run on the P prompts,
    and while the context is open the modules are replaced by an index per row (``rows``, set per
    decoder pass), exact and differentiable. Models without T5's cross-attention layout run
    unchanged (their K/V per row)."""
    attns = _cross_attentions(model.get_decoder())
    if attns is None:
        yield
        return
    saved = [(a.k, a.v) for a in attns]
    try:
        for attn, (k, v) in zip(attns, saved, strict=True):
            attn.k = _RowsOfPrompt(k(enc_PTH), rows)
            attn.v = _RowsOfPrompt(v(enc_PTH), rows)
        yield
    finally:
        for attn, (k, v) in zip(attns, saved, strict=True):
            attn.k, attn.v = k, v


def seq2seq_chunk(
    model: Any,
    prompt_ids: list[list[int]],
    row_prompt_R: Tensor,
    action_ids_RL: Tensor,
    lengths_R: Tensor,
    seg_first_row_S: Tensor,
    pad_id: int,
    want_action: bool,
    want_prompt: bool,
    want_last: bool,
) -> ChunkOut:
    """The decoder runs once per distinct action length, on unpadded ``[start] + action`` rows: no
    padded position costs a decoder or ``lm_head`` pass (Grasp/Release are 1 token, "Go to ..." 4-6).
    ``want_last``: also the decision after the whole action (position L: the EOS term of
    ``constrained``; the critic's hidden state); without it the input stops one token earlier."""
    start_id = model.config.decoder_start_token_id
    if start_id is None:
        raise ValueError("seq2seq model has no decoder_start_token_id")
    p_ids, p_mask = pad(prompt_ids, pad_id)
    device = model.device
    p_ids, p_mask = p_ids.to(device), p_mask.to(device)
    # Encoder once per prompt of the chunk; rows index its output (no re-encoding per action), and
    # the cross-attention K/V are projected once per prompt too (_cross_kv_once).
    enc_PTH = model.get_encoder()(input_ids=p_ids, attention_mask=p_mask, return_dict=True).last_hidden_state
    n_rows, width = action_ids_RL.shape
    want_hidden = want_action or want_prompt
    logits_RPV: Tensor | None = None
    hidden_start_RH = hidden_end_RH = None
    rows = _RowIndex(row_prompt_R)
    with _cross_kv_once(model, enc_PTH, rows):
        for length in lengths_R.unique().tolist():
            rows_b = (lengths_R == length).nonzero().squeeze(1)
            rows.index = row_prompt_R.index_select(0, rows_b)
            n_in = length + 1 if want_last else length  # decoder positions: [start] + action[:n_in - 1]
            start = torch.full((len(rows_b), 1), start_id, dtype=torch.long, device=device)
            out = model(
                encoder_outputs=BaseModelOutput(last_hidden_state=enc_PTH.index_select(0, rows.index)),
                attention_mask=p_mask.index_select(0, rows.index),
                decoder_input_ids=torch.cat([start, action_ids_RL[rows_b, : n_in - 1]], dim=1),
                output_hidden_states=want_hidden,
                use_cache=False,
                return_dict=True,
            )
            if logits_RPV is None:  # positions past a row's own decisions stay 0 (read through masks)
                logits_RPV = out.logits.new_zeros(n_rows, width + 1, out.logits.shape[-1])
                if want_hidden:
                    h = out.decoder_hidden_states[-1]
                    hidden_start_RH, hidden_end_RH = (
                        h.new_zeros(n_rows, h.shape[-1]),
                        h.new_zeros(n_rows, h.shape[-1]),
                    )
            logits_RPV[rows_b, :n_in] = out.logits
            if want_hidden:
                assert hidden_start_RH is not None and hidden_end_RH is not None
                h_BPH = out.decoder_hidden_states[-1]
                # Position 0 (start token) sees only the prompt; position L the whole action.
                hidden_start_RH[rows_b] = h_BPH[:, 0]
                if want_action:
                    hidden_end_RH[rows_b] = h_BPH[:, length]
    assert logits_RPV is not None
    action_h = hidden_end_RH if want_action else None
    prompt_h = (
        hidden_start_RH.index_select(0, seg_first_row_S)
        if want_prompt and hidden_start_RH is not None
        else None
    )
    return ChunkOut(logits_RPV, action_h, prompt_h)


def _rows_cache(past: Any, row_prompt_R: Tensor) -> Any:
    """The prompt KV cache indexed per row: row r reads prompt ``row_prompt_R[r]``'s keys/values."""
    if hasattr(past, "batch_select_indices"):  # transformers' Cache objects (DynamicCache in 4.5x)
        past.batch_select_indices(row_prompt_R)
        return past
    # Legacy tuple format: ((k, v) per layer), each (P, heads, T, head_dim).
    return tuple((k.index_select(0, row_prompt_R), v.index_select(0, row_prompt_R)) for k, v in past)


def _attention_4d(model: Any, key_mask_RK: Tensor, n_queries: int) -> Tensor:
    """A ready 4D mask (R, 1, Q, K) for the last Q of K positions: key k visible to query q iff it is a
    real token and k <= q (causal). transformers returns a 4D mask as-is, which skips its vmap-based mask
    construction (a quarter of a tiny model's scoring time). A query that would see nothing (a left-pad
    position) sees itself instead: a fully masked row gives NaN in SDPA, and NaN values times zero weights
    would leak into real rows through the values of later layers.
    Format: bool for SDPA, additive float (0 / dtype min) for eager attention."""
    n_keys = key_mask_RK.shape[1]
    offset = n_keys - n_queries
    q_pos = torch.arange(offset, n_keys, device=key_mask_RK.device)[:, None]
    k_pos = torch.arange(n_keys, device=key_mask_RK.device)[None, :]
    allowed = (key_mask_RK[:, None, :] & (k_pos <= q_pos)) | (k_pos == q_pos)  # (R, Q, K)
    allowed = allowed[:, None]
    if getattr(model.config, "_attn_implementation", "eager") == "sdpa":
        return allowed
    dtype = model.dtype if model.dtype.is_floating_point else torch.float32
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
        ~allowed, torch.finfo(dtype).min
    )


def causal_chunk(
    model: Any,
    prompt_ids: list[list[int]],
    row_prompt_R: Tensor,
    action_ids_RL: Tensor,
    action_mask_RL: Tensor,
    lengths_R: Tensor,
    seg_prompt_S: Tensor,
    pad_id: int,
    want_action: bool,
    want_prompt: bool,
) -> ChunkOut:
    device = model.device
    # Left padding puts every prompt's last token at the same index (-1); explicit position ids make
    # real tokens start at position 0 whatever the padding (GPT-2's absolute positions).
    p_ids, p_mask = pad(prompt_ids, pad_id, left=True)
    p_ids, p_mask = p_ids.to(device), p_mask.to(device)
    p_len_P = p_mask.sum(1)
    p_pos = (p_mask.long().cumsum(1) - 1).clamp(min=0)
    use_4d = getattr(model.config, "_attn_implementation", "eager") in ("sdpa", "eager")
    prompt_kwargs: dict[str, Any] = dict(
        input_ids=p_ids,
        attention_mask=_attention_4d(model, p_mask, p_ids.shape[1]) if use_4d else p_mask.long(),
        position_ids=p_pos,
        use_cache=True,
        output_hidden_states=want_prompt,
        return_dict=True,
    )
    try:  # only the last prompt position's logits are needed; skip the (P, T, V) projection
        p_out = model(**prompt_kwargs, logits_to_keep=1)
    except TypeError:  # models without logits_to_keep
        p_out = model(**prompt_kwargs)
    first_logits_PV = p_out.logits[:, -1]
    cache = _rows_cache(p_out.past_key_values, row_prompt_R)
    n_rows, width = action_ids_RL.shape
    a_pos = p_len_P.index_select(0, row_prompt_R)[:, None] + torch.arange(width, device=device)[None, :]
    key_mask = torch.cat([p_mask.index_select(0, row_prompt_R), action_mask_RL], dim=1)
    att = _attention_4d(model, key_mask, width) if use_4d else key_mask.long()
    out = model(
        input_ids=action_ids_RL,
        attention_mask=att,
        position_ids=a_pos,
        past_key_values=cache,
        use_cache=True,
        output_hidden_states=want_action,
        return_dict=True,
    )
    # Decision j: j=0 from the prompt's last logits, j>=1 from the row's position j-1.
    logits_RPV = torch.cat([first_logits_PV.index_select(0, row_prompt_R)[:, None], out.logits], dim=1)
    action_h = prompt_h = None
    if want_action:
        action_h = out.hidden_states[-1][torch.arange(n_rows, device=device), lengths_R - 1]
    if want_prompt:
        prompt_h = p_out.hidden_states[-1][:, -1].index_select(0, seg_prompt_S)
    return ChunkOut(logits_RPV, action_h, prompt_h)
