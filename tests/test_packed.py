"""The packed causal scorer (``llm/packed.py``) against the KV-cache scorer it replaces
(``chunks.causal_chunk``, still the fallback): same scores, hidden states and gradients, one forward
per chunk; and the tiny-causal preset's fused GELU against GPT-2's own ``gelu_new``."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest
import torch
from llm_fixtures import ACTIONS, PROMPTS, tiny_model

from sac_glam.llm import packed as packing
from sac_glam.llm import scoring
from sac_glam.llm.models import base_model
from sac_glam.llm.scoring import forward_actions

ATOL = 1e-5


def _run(lm: Any, packed: bool, normalization: str, minibatch_size: int) -> tuple[dict[str, Any], ...]:
    """forward_actions outputs and the gradients of a loss reading all of them, on one path."""
    lm.model.zero_grad()
    with mock.patch.object(scoring, "packs_prompts", lambda net: packed):
        fwd = forward_actions(
            lm.model, lm.tokenizer, PROMPTS, ACTIONS, minibatch_size=minibatch_size,
            normalization=normalization, hidden="both",
        )  # fmt: skip
    assert fwd.action_hidden_BAH is not None and fwd.prompt_hidden_BH is not None
    loss = (
        (fwd.log_pi_BA * fwd.mask_BA).sum()
        + 0.3 * fwd.logp_BA.sum()
        + fwd.action_hidden_BAH.sin().sum()
        + fwd.prompt_hidden_BH.cos().sum()
    )
    loss.backward()
    outs = {
        "logp": fwd.logp_BA.detach(),
        "log_pi": fwd.log_pi_BA.detach(),
        "action_h": fwd.action_hidden_BAH.detach(),
        "prompt_h": fwd.prompt_hidden_BH.detach(),
    }
    grads = {n: p.grad.clone() for n, p in lm.model.named_parameters() if p.grad is not None}
    return outs, grads


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("normalization", ["sum", "constrained"])
@pytest.mark.parametrize("minibatch_size", [512, 4])  # 4: prompts straddle chunks
def test_packed_equals_kv_cache_scorer(attn: str, normalization: str, minibatch_size: int) -> None:
    lm = tiny_model("tiny-causal")
    base_model(lm.model).config._attn_implementation = attn
    new_out, new_grads = _run(lm, True, normalization, minibatch_size)
    old_out, old_grads = _run(lm, False, normalization, minibatch_size)
    for key in old_out:
        assert torch.allclose(new_out[key], old_out[key], atol=ATOL), key
    assert set(new_grads) == set(old_grads) and len(old_grads) > 10
    # Gradients reach ~260 here, summed over hundreds of rows in another order: float32's rounding alone
    # is ~1e-7 of that scale per term, so the absolute tolerance scales with the largest gradient (on one
    # 2-core machine, sdpa/sum/512 missed a fixed atol of 1e-5 by 1.1e-5; any real bug differs by O(1)).
    scale = max(g.abs().max().item() for g in old_grads.values())
    for name, g in old_grads.items():
        assert torch.allclose(new_grads[name], g, atol=max(ATOL, 1e-6 * scale), rtol=1e-4), name
    assert any(g.abs().max() > 1e-3 for g in old_grads.values())  # the comparison is not of zeros


def test_one_forward_per_chunk_and_last_layer_at_read_positions() -> None:
    """The point of packing: the transformer runs once per chunk, not twice (prompt, then action rows);
    and GPT-2's last layer runs its MLP at the positions the scorer reads (fewer than the first's)."""
    lm = tiny_model("tiny-causal")
    net = base_model(lm.model)
    calls: list[int] = []
    mlp_tokens: list[list[int]] = [[], []]
    hooks = [net.transformer.register_forward_pre_hook(lambda m, a: calls.append(1))]
    for i, block in enumerate(net.transformer.h):
        hooks.append(
            block.mlp.register_forward_pre_hook(lambda m, a, i=i: mlp_tokens[i].append(a[0].shape[1]))
        )
    for packed, expected in ((True, 1), (False, 2)):
        calls.clear()
        with torch.no_grad(), mock.patch.object(scoring, "packs_prompts", return_value=packed):
            forward_actions(lm.model, lm.tokenizer, PROMPTS, ACTIONS)
        assert len(calls) == expected
    for h in hooks:
        h.remove()
    assert packing.gpt2_last_layer_at(net)
    # Packed run first: longest sequence (prompt + 6 actions) in layer 0, its action window in layer 1.
    assert mlp_tokens[1][0] < mlp_tokens[0][0] / 2


def test_packing_falls_back_without_4d_masks() -> None:
    lm = tiny_model("tiny-causal")
    net = base_model(lm.model)
    assert scoring.packs_prompts(net)
    net.config._attn_implementation = "flash_attention_2"
    assert not scoring.packs_prompts(net)


@torch.no_grad()
def test_tiny_causal_fused_gelu_is_gpt2_gelu() -> None:
    """tiny-causal uses the one-kernel tanh GELU; swapping GPT-2's default ``gelu_new`` back into the
    same weights changes the scores by float rounding only."""
    from transformers.activations import GELUTanh, NewGELUActivation

    lm = tiny_model("tiny-causal")
    blocks = base_model(lm.model).transformer.h
    assert all(isinstance(b.mlp.act, GELUTanh) for b in blocks)
    fused = forward_actions(lm.model, lm.tokenizer, PROMPTS, ACTIONS, normalization="constrained")
    for b in blocks:
        b.mlp.act = NewGELUActivation()
    reference = forward_actions(lm.model, lm.tokenizer, PROMPTS, ACTIONS, normalization="constrained")
    assert torch.allclose(fused.log_pi_BA, reference.log_pi_BA, atol=ATOL)
    assert torch.allclose(fused.logp_BA, reference.logp_BA, atol=ATOL)
