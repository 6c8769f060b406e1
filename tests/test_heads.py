"""Heads and the agent: Polyak exactness, the 2 x 2 critic grid of Appendix B, targets, value head."""

from __future__ import annotations

import copy

import pytest
import torch
from llm_fixtures import ACTIONS, PROMPTS, TINY

from sac_glam.config import CriticConfig, ModelConfig
from sac_glam.envs.goals import ALL_ACTIONS
from sac_glam.llm.agent import LLMAgent
from sac_glam.llm.heads import MLPHead, PromptInputQ, polyak_update


def test_mlp_head_shape() -> None:
    head = MLPHead(8, width=16, out_dim=3)
    assert head(torch.zeros(5, 8)).shape == (5, 3)
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(8, 16), (16, 16), (16, 3)]


def test_polyak_update_exact() -> None:
    online = [torch.tensor([1.0, 2.0]), torch.tensor([[4.0]])]
    target = [torch.tensor([3.0, -2.0]), torch.tensor([[0.0]])]
    polyak_update(online, target, tau=0.25)
    assert torch.equal(target[0], torch.tensor([0.25 * 1 + 0.75 * 3, 0.25 * 2 + 0.75 * -2]))
    assert torch.equal(target[1], torch.tensor([[1.0]]))
    polyak_update(online, target, tau=1.0)
    assert all(torch.equal(o, t) for o, t in zip(online, target, strict=True))
    with pytest.raises(ValueError):
        polyak_update(online, target[:1], tau=0.5)  # strict zip: a missing parameter is a bug


def make_agent(**critic: object) -> LLMAgent:
    torch.manual_seed(0)
    return LLMAgent(ModelConfig(name="tiny-t5", tiny=TINY), CriticConfig(width=16, **critic), need_value=True)  # type: ignore[arg-type]


@pytest.mark.parametrize("backprop_llm", [True, False])
@pytest.mark.parametrize("critic_input", ["prompt_action", "prompt"])
def test_critic_step_changes_llm_iff_backprop(critic_input: str, backprop_llm: bool) -> None:
    agent = make_agent(input=critic_input, backprop_llm=backprop_llm, n_critics=2)
    groups = agent.trainable_parameters()
    llm_before = [p.detach().clone() for p in groups.llm_params]
    heads_before = [p.detach().clone() for p in groups.critic_params]
    opt = torch.optim.SGD(groups.llm_params + groups.critic_params, lr=0.1)
    out = agent.evaluate(PROMPTS, ACTIONS, q=True)
    assert out.q_KBA is not None and out.q_KBA.shape == (2, len(PROMPTS), 6)
    assert torch.all(out.q_KBA[:, ~out.mask_BA] == 0)
    loss = ((out.q_KBA - 1.0) ** 2 * out.mask_BA).sum()  # a loss on Q only
    loss.backward()
    opt.step()
    llm_changed = any(not torch.equal(b, p) for b, p in zip(llm_before, groups.llm_params, strict=True))
    assert llm_changed == backprop_llm
    assert all(not torch.equal(b, p) for b, p in zip(heads_before, groups.critic_params, strict=True))


def test_backprop_false_keeps_policy_gradients() -> None:
    agent = make_agent(backprop_llm=False)
    out = agent.evaluate(PROMPTS, ACTIONS, q=True)
    (out.log_pi_BA * out.mask_BA).sum().backward()  # the actor still trains the LLM
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.trainable_parameters().llm_params)


def test_target_heads_follow_by_tau() -> None:
    agent = make_agent(n_critics=2)
    online, target = list(agent.q.parameters()), list(agent.target_q.parameters())
    assert all(torch.equal(o, t) for o, t in zip(online, target, strict=True))  # starts as a copy
    assert not any(t.requires_grad for t in target)
    opt = torch.optim.SGD(online, lr=0.1)
    out = agent.evaluate(PROMPTS, ACTIONS, q=True, target_q=True)
    assert out.q_KBA is not None and out.target_q_KBA is not None
    torch.testing.assert_close(out.target_q_KBA, out.q_KBA.detach())
    ((out.q_KBA - 1.0) ** 2).sum().backward()
    opt.step()
    old_target = [t.clone() for t in target]
    tau = 0.3
    agent.update_target(tau)
    for o, t, t0 in zip(online, target, old_target, strict=True):
        torch.testing.assert_close(t, tau * o + (1 - tau) * t0, atol=1e-7, rtol=0)
    assert any(not torch.equal(o, t) for o, t in zip(online, target, strict=True))
    with torch.no_grad():
        after = agent.evaluate(PROMPTS, ACTIONS, q=True, target_q=True)
    assert after.q_KBA is not None and after.target_q_KBA is not None
    assert not torch.allclose(after.q_KBA, after.target_q_KBA)


def test_target_adapter_polyak_and_separate_forward() -> None:
    torch.manual_seed(0)
    agent = LLMAgent(
        ModelConfig(name="tiny-causal", tiny=TINY, lora=True, lora_r=4, lora_alpha=8),
        CriticConfig(width=16, target="adapter"),
    )
    params = dict(agent.llm.named_parameters())
    pairs = [(n, n.replace(".default.", ".target.")) for n in params if "lora_" in n and ".default." in n]
    assert pairs and all(not params[t].requires_grad for _, t in pairs)
    groups = agent.trainable_parameters()
    assert {id(p) for p in groups.llm_params} == {id(params[o]) for o, _ in pairs}
    opt = torch.optim.SGD(groups.llm_params + groups.critic_params, lr=0.5)
    out = agent.evaluate(PROMPTS, ACTIONS, q=True)
    nxt = agent.evaluate(PROMPTS, ACTIONS, target_q=True)  # between forward and backward, as in SAC
    assert out.q_KBA is not None and nxt.target_q_KBA is not None and not nxt.target_q_KBA.requires_grad
    ((out.q_KBA - 1.0) ** 2).sum().backward()
    assert all(params[o].grad is not None for o, _ in pairs[1::2])  # lora_B grads survived the switch
    opt.step()
    old = {t: params[t].detach().clone() for _, t in pairs}
    agent.update_target(0.1)
    for o, t in pairs:
        torch.testing.assert_close(params[t], 0.1 * params[o] + 0.9 * old[t], atol=1e-7, rtol=0)
    # With heads and adapter copied exactly, the separate target forward reproduces online Q.
    agent.update_target(1.0)
    with torch.no_grad():
        same = agent.evaluate(PROMPTS, ACTIONS, q=True, target_q=True)
    assert same.q_KBA is not None and same.target_q_KBA is not None
    torch.testing.assert_close(same.target_q_KBA, same.q_KBA, atol=1e-6, rtol=0)


def test_prompt_critic_gathers_admissible_actions() -> None:
    agent = make_agent(input="prompt")
    assert isinstance(agent.q, PromptInputQ)
    with torch.no_grad():
        out = agent.evaluate(PROMPTS, ACTIONS, q=True)
        fwd_h = agent._forward(PROMPTS, ACTIONS, "prompt").prompt_hidden_BH
        assert fwd_h is not None and out.q_KBA is not None
        all_q = agent.q.heads[0](fwd_h)  # (B, |ALL_ACTIONS|)
    assert all_q.shape == (len(PROMPTS), len(ALL_ACTIONS))
    for b, acts in enumerate(ACTIONS):
        for a, action in enumerate(acts):
            assert out.q_KBA[0, b, a] == all_q[b, ALL_ACTIONS.index(action)]
    with pytest.raises(KeyError, match="not in the critic's action vocabulary"):
        agent.evaluate(PROMPTS[:1], [["Fly to the moon"]], q=True)


def test_value_head_and_param_groups() -> None:
    agent = make_agent()
    out = agent.evaluate(PROMPTS, ACTIONS, v=True)
    assert out.v_B is not None and out.v_B.shape == (len(PROMPTS),) and out.q_KBA is None
    out.v_B.sum().backward()
    groups = agent.parameter_groups()
    assert set(groups) == {"llm", "critic", "value"}
    assert all(p.grad is not None for p in groups["value"])
    assert any(p.grad is not None for p in groups["llm"])  # V shares the LLM (GLAM)
    ids = [{id(p) for p in g} for g in groups.values()]
    assert not (ids[0] & ids[1]) and not (ids[1] & ids[2]) and not (ids[0] & ids[2])
    no_value = LLMAgent(ModelConfig(name="tiny-t5", tiny=TINY), CriticConfig(width=16))
    with pytest.raises(ValueError, match="no value head"):
        no_value.evaluate(PROMPTS, ACTIONS, v=True)


def test_llm_stays_in_eval_mode() -> None:
    agent = make_agent()
    agent.train()
    assert agent.q.training and not agent.llm.training
    clone = copy.deepcopy(agent)
    with torch.no_grad():
        a = agent.evaluate(PROMPTS, ACTIONS).log_pi_BA
        b = clone.evaluate(PROMPTS, ACTIONS).log_pi_BA
    assert torch.equal(a, b)
