"""Scoring pins properties against brute force: one (prompt, action) pair at a time, unpadded, a plain
full forward without cache, log_softmax + gather (style point 12)."""

from __future__ import annotations

import math

import pytest
import torch
from llm_fixtures import (
    ACTIONS,
    PROMPTS,
    brute_force_constrained,
    brute_force_token_logprobs,
    tiny_model,
)

from sac_glam.llm import score_actions
from sac_glam.llm.models import LoadedModel, base_model
from sac_glam.llm.scoring import forward_actions

FAMILIES = ["tiny-t5", "tiny-causal"]
ATOL = 1e-5


@pytest.fixture(scope="module", params=FAMILIES)
def lm(request: pytest.FixtureRequest) -> LoadedModel:
    return tiny_model(request.param)


def brute_force_hidden(lm: LoadedModel, prompt: str, action: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(action hidden, prompt hidden) from plain unpadded forwards of one pair."""
    net = base_model(lm.model)
    p = lm.tokenizer(prompt)["input_ids"]
    a = lm.tokenizer(action, add_special_tokens=False)["input_ids"]
    if lm.family == "seq2seq":
        dec = [net.config.decoder_start_token_id, *a]
        out = net(
            input_ids=torch.tensor([p]), decoder_input_ids=torch.tensor([dec]), output_hidden_states=True
        )
        h = out.decoder_hidden_states[-1][0]
        return h[len(a)], h[0]
    out = net(input_ids=torch.tensor([p + a]), output_hidden_states=True)
    h = out.hidden_states[-1][0]
    return h[-1], h[len(p) - 1]


@torch.no_grad()
def test_equals_brute_force_mixed_lengths(lm: LoadedModel) -> None:
    # Prompts of different lengths, actions of 1-4 tokens, and an action holding token id 0 (",").
    actions = [[*ACTIONS[0], "red , cat"], ACTIONS[1], ACTIONS[2]]
    assert lm.tokenizer.convert_tokens_to_ids(",") == 0
    fwd = forward_actions(lm.model, lm.tokenizer, PROMPTS, actions, family=lm.family, hidden="both")
    assert fwd.action_hidden_BAH is not None and fwd.prompt_hidden_BH is not None
    for b, (prompt, acts) in enumerate(zip(PROMPTS, actions, strict=True)):
        for a, action in enumerate(acts):
            logp, _ = brute_force_token_logprobs(lm, prompt, action)
            assert fwd.logp_BA[b, a].item() == pytest.approx(logp.sum().item(), abs=ATOL)
            assert int(fwd.n_tokens_BA[b, a]) == len(logp)
            h_action, h_prompt = brute_force_hidden(lm, prompt, action)
            torch.testing.assert_close(fwd.action_hidden_BAH[b, a], h_action, atol=ATOL, rtol=0)
            torch.testing.assert_close(fwd.prompt_hidden_BH[b], h_prompt, atol=ATOL, rtol=0)


@torch.no_grad()
def test_batch_composition_independence(lm: LoadedModel) -> None:
    full = forward_actions(lm.model, lm.tokenizer, PROMPTS, ACTIONS, hidden="both", minibatch_size=512)
    tiny_mb = forward_actions(lm.model, lm.tokenizer, PROMPTS, ACTIONS, hidden="both", minibatch_size=1)
    odd_mb = forward_actions(lm.model, lm.tokenizer, PROMPTS, ACTIONS, hidden="both", minibatch_size=4)
    for other in (tiny_mb, odd_mb):
        torch.testing.assert_close(other.logp_BA, full.logp_BA, atol=ATOL, rtol=0)
        torch.testing.assert_close(other.action_hidden_BAH, full.action_hidden_BAH, atol=ATOL, rtol=0)
        torch.testing.assert_close(other.prompt_hidden_BH, full.prompt_hidden_BH, atol=ATOL, rtol=0)
    for b in range(len(PROMPTS)):
        alone = forward_actions(lm.model, lm.tokenizer, [PROMPTS[b]], [ACTIONS[b]])
        n = len(ACTIONS[b])
        torch.testing.assert_close(alone.logp_BA[0, :n], full.logp_BA[b, :n], atol=ATOL, rtol=0)
    # The longest prompt padded next to the shortest one, and in reverse order.
    rev = forward_actions(lm.model, lm.tokenizer, PROMPTS[::-1], ACTIONS[::-1])
    for b in range(len(PROMPTS)):
        n = len(ACTIONS[b])
        torch.testing.assert_close(
            rev.logp_BA[len(PROMPTS) - 1 - b, :n], full.logp_BA[b, :n], atol=ATOL, rtol=0
        )


@torch.no_grad()
def test_score_actions_public_api(lm: LoadedModel) -> None:
    scores = score_actions(lm.model, lm.tokenizer, PROMPTS, ACTIONS, minibatch_size=3)
    assert [s.shape for s in scores] == [(len(a),) for a in ACTIONS]
    for prompt, acts, s in zip(PROMPTS, ACTIONS, scores, strict=True):
        ref = torch.stack([brute_force_token_logprobs(lm, prompt, a)[0].sum() for a in acts])
        torch.testing.assert_close(s, ref, atol=ATOL, rtol=0)


@torch.no_grad()
def test_policy_normalisations_by_hand(lm: LoadedModel) -> None:
    fwd_sum = forward_actions(lm.model, lm.tokenizer, PROMPTS, ACTIONS, normalization="sum")
    fwd_mean = forward_actions(lm.model, lm.tokenizer, PROMPTS, ACTIONS, normalization="mean")
    for b, acts in enumerate(ACTIONS):
        logps = [float(fwd_sum.logp_BA[b, a]) for a in range(len(acts))]
        lengths = [len(lm.tokenizer(a, add_special_tokens=False)["input_ids"]) for a in acts]
        z = math.log(sum(math.exp(x) for x in logps))  # eq. 2 by hand
        for a in range(len(acts)):
            assert float(fwd_sum.log_pi_BA[b, a]) == pytest.approx(logps[a] - z, abs=ATOL)
        means = [x / n for x, n in zip(logps, lengths, strict=True)]
        zm = math.log(sum(math.exp(x) for x in means))
        for a in range(len(acts)):
            assert float(fwd_mean.log_pi_BA[b, a]) == pytest.approx(means[a] - zm, abs=ATOL)


def test_padded_actions_get_nothing_and_no_nan(lm: LoadedModel) -> None:
    for norm in ("sum", "mean", "constrained"):
        fwd = forward_actions(lm.model, lm.tokenizer, PROMPTS, ACTIONS, normalization=norm, hidden="both")
        expected_mask = torch.tensor([[a < len(acts) for a in range(6)] for acts in ACTIONS])
        assert torch.equal(fwd.mask_BA, expected_mask)
        pi = fwd.log_pi_BA.exp() * fwd.mask_BA
        assert torch.all(fwd.log_pi_BA[~fwd.mask_BA] == 0) and torch.all(fwd.logp_BA[~fwd.mask_BA] == 0)
        torch.testing.assert_close(pi.sum(-1), torch.ones(len(PROMPTS)), atol=ATOL, rtol=0)
        # An entropy over the padded tensor: finite value and finite gradients everywhere.
        entropy = -(pi * fwd.log_pi_BA).sum()
        params = [p for p in lm.model.parameters() if p.requires_grad]
        grads = torch.autograd.grad(entropy, params, allow_unused=True)
        assert torch.isfinite(entropy)
        assert all(torch.isfinite(g).all() for g in grads if g is not None)


@torch.no_grad()
def test_constrained_equals_trie_walk(lm: LoadedModel) -> None:
    # The last state has actions that are strict prefixes of others ("Grasp" < "Grasp red cat",
    # "Go to red" < "Go to red cat"): stopping is then a choice, scored by the EOS logit.
    actions = [ACTIONS[0], ACTIONS[1], ["Grasp", "Grasp red cat", "Go to red cat", "Go to red", "Release"]]
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[2]]
    fwd = forward_actions(
        lm.model, lm.tokenizer, prompts, actions, normalization="constrained", minibatch_size=4
    )
    for b, acts in enumerate(actions):
        pi = fwd.log_pi_BA[b, : len(acts)].exp()
        assert float(pi.sum()) == pytest.approx(1.0, abs=ATOL)
        torch.testing.assert_close(pi, brute_force_constrained(lm, prompts[b], acts), atol=ATOL, rtol=0)


def test_gradients_reach_lora() -> None:
    for name in FAMILIES:
        lm = tiny_model(name, lora=True, lora_r=4, lora_alpha=8)
        fwd = forward_actions(lm.model, lm.tokenizer, PROMPTS, ACTIONS, hidden="both")
        assert fwd.action_hidden_BAH is not None and fwd.prompt_hidden_BH is not None
        loss = -(fwd.log_pi_BA * fwd.mask_BA).sum() + fwd.action_hidden_BAH.sum() + fwd.prompt_hidden_BH.sum()
        loss.backward()
        lora_b = [(n, p) for n, p in lm.model.named_parameters() if "lora_B" in n]
        assert lora_b and all(p.grad is not None and p.grad.abs().sum() > 0 for _, p in lora_b)
        frozen = [p for n, p in lm.model.named_parameters() if "lora_" not in n]
        assert all(p.grad is None for p in frozen)


def test_rejects_bad_inputs(lm: LoadedModel) -> None:
    with pytest.raises(ValueError, match="no admissible action"):
        forward_actions(lm.model, lm.tokenizer, PROMPTS[:1], [[]])
    with pytest.raises(ValueError, match="prompts but"):
        forward_actions(lm.model, lm.tokenizer, PROMPTS, ACTIONS[:1])
    with pytest.raises(ValueError, match="distinct"):
        forward_actions(
            lm.model, lm.tokenizer, PROMPTS[:1], [["Grasp", "Grasp"]], normalization="constrained"
        )


@torch.no_grad()
def test_causal_eager_attention_matches_brute_force() -> None:
    # The scorer hands GPT-2 a ready 4D mask: bool for SDPA (the default), additive float for eager.
    lm = tiny_model("tiny-causal")
    base_model(lm.model).config._attn_implementation = "eager"
    fwd = forward_actions(lm.model, lm.tokenizer, PROMPTS, ACTIONS)
    for b, (prompt, acts) in enumerate(zip(PROMPTS, ACTIONS, strict=True)):
        for a, action in enumerate(acts):
            logp, _ = brute_force_token_logprobs(lm, prompt, action)
            assert fwd.logp_BA[b, a].item() == pytest.approx(logp.sum().item(), abs=ATOL)


@torch.no_grad()
@pytest.mark.parametrize("normalization", ["sum", "mean", "constrained"])
def test_log_pi_does_not_depend_on_minibatch_size(lm: LoadedModel, normalization: str) -> None:
    # Actions of [4, 4, 4, 1, 1] tokens first: with minibatch_size 4, the second chunk holds only the
    # state's short actions (the chunk's decision logits then have 2 positions, the state's allowed
    # sets 5), which crashed the constrained normalisation (issue 13, bug 3). Every size from 1 to
    # all rows at once splits the states differently.
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[2], PROMPTS[0]]
    actions = [ACTIONS[0], ["Grasp", "Release"], ACTIONS[2], ["Grasp", "Go to green mouse", "Release"]]
    assert [len(lm.tokenizer(a, add_special_tokens=False)["input_ids"]) for a in ACTIONS[0]] == [
        4,
        4,
        4,
        1,
        1,
    ]
    n_rows = sum(len(a) for a in actions)
    ref = forward_actions(lm.model, lm.tokenizer, prompts, actions, normalization=normalization,
                          minibatch_size=n_rows)  # fmt: skip
    for size in range(1, n_rows):
        fwd = forward_actions(lm.model, lm.tokenizer, prompts, actions, normalization=normalization,
                              minibatch_size=size)  # fmt: skip
        torch.testing.assert_close(
            fwd.log_pi_BA, ref.log_pi_BA, atol=ATOL, rtol=0, msg=f"minibatch_size={size}"
        )
    for b, acts in enumerate(actions):  # and each state scored alone
        alone = forward_actions(lm.model, lm.tokenizer, [prompts[b]], [acts], normalization=normalization)
        torch.testing.assert_close(alone.log_pi_BA[0], ref.log_pi_BA[b, : len(acts)], atol=ATOL, rtol=0)


def test_seq2seq_cross_attention_kv_projected_once_per_prompt() -> None:
    """The decoder's cross-attention K/V projections run on the P prompts of a chunk, not on its rows
    (issue 13, item 4), and the shared projections stay exact: scores and LoRA gradients (adapters on
    q, k, v, o) equal the sum of one-pair brute-force forwards."""
    lm = tiny_model("tiny-t5", lora=True, lora_r=4, lora_alpha=8, lora_target_modules=["q", "k", "v", "o"])
    with torch.no_grad():  # non-zero adapters: every LoRA matrix changes the scores and gets a gradient
        for n, p in lm.model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.1)
    attns = [block.layer[1].EncDecAttention for block in base_model(lm.model).get_decoder().block]
    originals = [(a.k, a.v) for a in attns]
    batch_sizes: list[int] = []
    hooks = [
        m.register_forward_hook(lambda _m, args, _out: batch_sizes.append(args[0].shape[0]))
        for pair in originals
        for m in pair
    ]
    fwd = forward_actions(lm.model, lm.tokenizer, PROMPTS, ACTIONS)
    for h in hooks:
        h.remove()
    assert batch_sizes == [len(PROMPTS)] * (2 * len(attns))  # 13 rows, 3 prompts: once per prompt
    assert [(a.k, a.v) for a in attns] == originals  # the projections are back in place
    params = [p for n, p in lm.model.named_parameters() if "lora_" in n]
    grads = torch.autograd.grad((fwd.logp_BA * fwd.mask_BA).sum(), params)
    brute = sum(
        brute_force_token_logprobs(lm, prompt, action)[0].sum()
        for prompt, acts in zip(PROMPTS, ACTIONS, strict=True)
        for action in acts
    )
    assert isinstance(brute, torch.Tensor)
    assert fwd.logp_BA.sum().item() == pytest.approx(brute.item(), abs=ATOL * 13)
    for g, g_ref in zip(grads, torch.autograd.grad(brute, params), strict=True):
        assert g.abs().sum() > 0
        torch.testing.assert_close(g, g_ref, atol=ATOL, rtol=1e-4)
