"""``critic.share_llm=false``: the critic reads its own LLM copy; each loss trains only its own network."""

import pytest
import torch
from llm_fixtures import ACTIONS, PROMPTS

from sac_glam.config import CriticConfig, ModelConfig, TinyModelConfig
from sac_glam.llm.agent import LLMAgent

TINY = TinyModelConfig(d_model=32, n_layers=1, n_heads=4, d_ff=64)


def _agent(n_critics: int = 2, target: str = "head") -> LLMAgent:
    torch.manual_seed(0)
    model = ModelConfig(name="tiny-t5", tiny=TINY, normalization="constrained")
    return LLMAgent(model, CriticConfig(share_llm=False, width=16, n_critics=n_critics, target=target))  # type: ignore[arg-type]


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(before[k], v) for k, v in module.state_dict().items())


def test_critic_loss_trains_critic_llm_and_heads_not_the_policy():
    agent = _agent()
    policy, critic, heads = _snapshot(agent.llm), _snapshot(agent.critic_llm), _snapshot(agent.q)
    groups = agent.parameter_groups()
    opt = torch.optim.SGD(groups["llm"] + groups["critic"], lr=0.1)
    out = agent.evaluate(PROMPTS, ACTIONS, q=True)
    (out.q_KBA.masked_select(out.mask_BA.unsqueeze(0)) ** 2).mean().backward()
    opt.step()
    assert not _changed(policy, agent.llm)
    assert _changed(critic, agent.critic_llm) and _changed(heads, agent.q)


def test_actor_loss_trains_the_policy_not_the_critic():
    agent = _agent()
    policy, critic = _snapshot(agent.llm), _snapshot(agent.critic_llm)
    groups = agent.parameter_groups()
    opt = torch.optim.SGD(groups["llm"] + groups["critic"], lr=0.1)
    out = agent.evaluate(PROMPTS, ACTIONS, q=True)
    pi = out.log_pi_BA.exp() * out.mask_BA
    (-(pi * out.q_KBA.min(0).values.detach()).sum(-1).mean()).backward()
    opt.step()
    assert _changed(policy, agent.llm) and not _changed(critic, agent.critic_llm)


def test_target_q_reads_the_critic_llm_and_state_round_trips(tmp_path):
    agent = _agent()
    with torch.no_grad():
        out = agent.evaluate(PROMPTS, ACTIONS, q=True, target_q=True)
    # Targets start as exact copies of the online heads on the same (critic LLM) features.
    assert torch.equal(out.q_KBA, out.target_q_KBA)
    state = {k: {n: t.clone() for n, t in v.items()} for k, v in agent.trainable_state_dict().items()}
    assert "critic_llm" in state
    other = _agent()
    torch.manual_seed(123)
    other.load_trainable_state_dict(state)
    with torch.no_grad():
        again = other.evaluate(PROMPTS, ACTIONS, q=True)
    assert torch.allclose(again.q_KBA, out.q_KBA) and torch.allclose(again.log_pi_BA, out.log_pi_BA)
    agent.save(tmp_path / "saved")
    reloaded = _agent()
    with torch.no_grad():
        for p in reloaded.critic_llm.parameters():
            p.add_(1.0)
    reloaded.load(tmp_path / "saved")
    with torch.no_grad():
        assert torch.allclose(reloaded.evaluate(PROMPTS, ACTIONS, q=True).q_KBA, out.q_KBA, atol=1e-6)


def test_target_network_lags_the_critic_llm_by_polyak_steps(tmp_path):
    agent = _agent(target="network")
    with torch.no_grad():
        start = agent.evaluate(PROMPTS, ACTIONS, q=True, target_q=True)
        assert torch.equal(start.q_KBA, start.target_q_KBA)  # a copy at first
        for p in agent.critic_llm.parameters():
            p.add_(0.05 * torch.randn_like(p))  # a critic step
        moved = agent.evaluate(PROMPTS, ACTIONS, q=True, target_q=True)
    # The online Q moved with the critic LLM; the target did not (with target='head' it would have).
    assert not torch.allclose(moved.q_KBA, start.q_KBA, atol=1e-4)
    assert torch.equal(moved.target_q_KBA, start.target_q_KBA)
    agent.update_target(0.0)
    with torch.no_grad():
        assert torch.equal(agent.evaluate(PROMPTS, ACTIONS, target_q=True).target_q_KBA, start.target_q_KBA)
    agent.update_target(1.0)  # tau = 1: the target becomes the online critic
    with torch.no_grad():
        synced = agent.evaluate(PROMPTS, ACTIONS, target_q=True).target_q_KBA
    assert torch.allclose(synced, moved.q_KBA, atol=1e-6)
    # The target LLM is part of the trainable state (checkpoints) and of save/load.
    state = agent.trainable_state_dict()
    other = _agent(target="network")
    other.load_trainable_state_dict(state)
    with torch.no_grad():
        assert torch.allclose(other.evaluate(PROMPTS, ACTIONS, target_q=True).target_q_KBA, synced, atol=1e-6)
    with pytest.raises(ValueError, match="no target critic LLM"):
        other.load_trainable_state_dict({k: v for k, v in state.items() if k != "target_critic_llm"})
    agent.save(tmp_path / "saved")
    reloaded = _agent(target="network")
    reloaded.load(tmp_path / "saved")
    with torch.no_grad():
        assert torch.allclose(
            reloaded.evaluate(PROMPTS, ACTIONS, target_q=True).target_q_KBA, synced, atol=1e-6
        )
    with pytest.raises(ValueError, match="share_llm=false"):
        LLMAgent(ModelConfig(name="tiny-t5", tiny=TINY), CriticConfig(width=16, target="network"))
