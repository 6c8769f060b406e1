"""SACUpdater on a real (tiny) agent: warm-up trains the critic only; afterwards the actor learns too."""

import contextlib
import sys
from unittest import mock

import pytest
import torch
from llm_fixtures import ACTIONS, PROMPTS

from sac_glam.algos import sac
from sac_glam.algos.updaters import SACUpdater, bootstrap_target
from sac_glam.buffers.replay import SACBatch
from sac_glam.config import CriticConfig, ModelConfig, SACConfig, TinyModelConfig
from sac_glam.llm.agent import LLMAgent

TINY = TinyModelConfig(d_model=32, n_layers=1, n_heads=4, d_ff=64)


def _batch() -> SACBatch:
    return SACBatch(
        prompts=PROMPTS,
        actions=ACTIONS,
        action_ids=torch.tensor([0, 1, 2]),
        returns=torch.tensor([0.0, 1.0, 0.0]),
        next_prompts=PROMPTS[::-1],
        next_actions=ACTIONS[::-1],
        discounts=torch.tensor([0.99, 0.0, 0.99]),
        is_her=torch.tensor([False, True, False]),
        goal_types=["grow_then_grow", "grasp", "grasp"],
        returns_to_go=torch.tensor([0.5, 1.0, 0.0]),
    )


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(before[k], v) for k, v in module.state_dict().items())


@pytest.mark.parametrize(
    "critic",
    [
        CriticConfig(width=16),  # the paper's layout: shared LLM, critic gradients into it (Appendix B)
        CriticConfig(share_llm=False, width=16),
        CriticConfig(backprop_llm=False, width=16),
    ],
    ids=["shared-backprop", "separate", "shared-detached"],
)
def test_warmup_leaves_the_actor_untouched_then_the_actor_learns(critic):
    torch.manual_seed(0)
    agent = LLMAgent(ModelConfig(name="tiny-t5", tiny=TINY, normalization="constrained"), critic)
    updater = SACUpdater(
        agent, SACConfig(warmup_updates=2, actor_lr=1e-2, critic_lr=1e-2, chunk_size=2), tau=0.5
    )
    policy, heads, target = _snapshot(agent.llm), _snapshot(agent.q), _snapshot(agent.target_q)
    with torch.no_grad():
        before = agent.evaluate(PROMPTS, ACTIONS, q=True)
    alpha = updater.alpha.value
    for _ in range(2):
        stats = updater.update(_batch())
        assert stats["train/warmup"] == 1.0
    assert not _changed(policy, agent.llm), "warm-up must not move the policy"
    with torch.no_grad():
        after = agent.evaluate(PROMPTS, ACTIONS, q=True)
    assert torch.equal(after.log_pi_BA, before.log_pi_BA), "log pi moved during warm-up"
    assert not torch.allclose(after.q_KBA, before.q_KBA), "the critic must learn during warm-up"
    assert _changed(heads, agent.q) and _changed(target, agent.target_q)
    assert updater.alpha.value == alpha  # alpha waits for the actor
    stats = updater.update(_batch())
    assert stats["train/warmup"] == 0.0 and _changed(policy, agent.llm)
    assert updater.alpha.value != alpha


def test_chunked_update_equals_one_chunk():
    def run(chunk: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        agent = LLMAgent(ModelConfig(name="tiny-t5", tiny=TINY, normalization="constrained"),
                         CriticConfig(share_llm=False, width=16))  # fmt: skip
        updater = SACUpdater(agent, SACConfig(chunk_size=chunk), tau=0.1)
        # SGD, not Adam: Adam's first step is ~lr * sign(g), which turns float noise on near-zero
        # gradients into full-size steps; SGD's step is proportional to the gradient being compared.
        params = [p for group in updater.optimizer.param_groups for p in group["params"]]
        updater.optimizer = torch.optim.SGD(params, lr=0.1)
        updater.update(_batch())
        state = agent.trainable_state_dict()
        return {f"{part}.{k}": v.clone() for part, tensors in state.items() for k, v in tensors.items()}

    one, many = run(3), run(1)
    for k in one:
        assert torch.allclose(one[k], many[k], atol=1e-5), k


@pytest.mark.parametrize("discounts", [[0.99, 0.0, 0.99], [0.0, 0.0, 0.0], [0.9, 0.8, 0.99]])
def test_bootstrap_target_skips_terminal_next_states_exactly(discounts):
    """The next-state forwards run on the bootstrapping rows only, and the targets equal eq. 3's
    computed on every row (the full forward, then returns + discounts * V(s'))."""
    torch.manual_seed(0)
    agent = LLMAgent(ModelConfig(name="tiny-causal", tiny=TINY, normalization="constrained"),
                     CriticConfig(share_llm=False, width=16))  # fmt: skip
    b = _batch()._replace(discounts=torch.tensor(discounts), returns=torch.tensor([0.5, 1.0, -0.25]))
    alpha, scale = 0.05, 2.0
    with torch.no_grad():
        nxt = agent.evaluate(b.next_prompts, b.next_actions, target_q=True)
        reference = sac.critic_target(b.returns * scale, b.discounts, nxt.log_pi_BA, nxt.mask_BA,
                                      nxt.target_q_KBA, alpha)  # fmt: skip
    seen: list[str] = []
    evaluate = agent.evaluate

    def counting(prompts, actions, **kwargs):
        seen.extend(prompts)
        return evaluate(prompts, actions, **kwargs)

    with mock.patch.object(agent, "evaluate", counting):
        target = bootstrap_target(agent, b, alpha, scale)
    assert torch.allclose(target, reference, atol=1e-6)
    assert seen == [p for p, d in zip(b.next_prompts, discounts, strict=True) if d != 0.0]
    if any(discounts):  # the bootstrapped rows are not plain reward sums
        assert not torch.allclose(reference, b.returns * scale)


@pytest.mark.parametrize("lower_bound", [False, True])
def test_target_lower_bound_raises_the_critic_target_to_the_observed_return(lower_bound):
    """``sac.target_lower_bound``: the critic regresses on max(eq. 3's target, returns_to_go); off, on
    eq. 3's target alone."""
    torch.manual_seed(0)
    agent = LLMAgent(ModelConfig(name="tiny-causal", tiny=TINY, normalization="constrained"),
                     CriticConfig(share_llm=False, width=16))  # fmt: skip
    cfg = SACConfig(target_lower_bound=lower_bound, reward_scale=2.0)
    updater = SACUpdater(agent, cfg, tau=0.1)
    b = _batch()._replace(returns_to_go=torch.tensor([5.0, 0.0, -5.0]))  # above, below any target
    with torch.no_grad():
        plain = bootstrap_target(agent, b, updater.alpha.value, cfg.reward_scale)
    seen: list[torch.Tensor] = []
    critic_loss = sac.critic_loss

    def recording(q_KBA, action_ids_B, target_B):
        seen.append(target_B.clone())
        return critic_loss(q_KBA, action_ids_B, target_B)

    with mock.patch.object(sac, "critic_loss", recording):
        updater.update(b)
    expected = torch.maximum(plain, b.returns_to_go * cfg.reward_scale) if lower_bound else plain
    assert torch.allclose(torch.cat(seen), expected, atol=1e-6)
    assert (float(seen[0][0]) == 10.0) == lower_bound  # row 0 raised to its return, 2 x 5.0


def _host_reads_in_updaters(update, batch) -> int:
    """How many times ``sac_glam/algos/updaters.py`` itself reads a tensor's value back to the host
    (``float``, ``item``, ``tolist``) during ``update(batch)``. On a GPU each read waits for the device."""
    reads = 0
    originals = {name: getattr(torch.Tensor, name) for name in ("__float__", "item", "tolist")}

    def counting(original):
        def read(self, *args, **kwargs):
            nonlocal reads
            if sys._getframe(1).f_code.co_filename.endswith("updaters.py"):
                reads += 1
            return original(self, *args, **kwargs)

        return read

    with contextlib.ExitStack() as stack:
        for name, original in originals.items():
            stack.enter_context(mock.patch.object(torch.Tensor, name, counting(original)))
        update(batch)
    return reads


def test_updates_read_back_from_the_device_once_per_step_not_per_chunk():
    """The per-chunk losses are summed on the device and the bootstrapping rows are read on the host
    before the batch moves, so a step of 3 chunks waits for the device as often as a step of one."""
    from sac_glam.algos.updaters import PPOUpdater
    from sac_glam.buffers.rollout import PPOBatch
    from sac_glam.config import PPOConfig

    def agent(**kwargs) -> LLMAgent:
        torch.manual_seed(0)
        return LLMAgent(ModelConfig(name="tiny-causal", tiny=TINY, normalization="constrained"),
                        CriticConfig(share_llm=False, width=16), **kwargs)  # fmt: skip

    sac_reads = [_host_reads_in_updaters(SACUpdater(agent(), SACConfig(chunk_size=c), tau=0.1).update, _batch())
                 for c in (3, 1)]  # fmt: skip
    ppo_batch = PPOBatch(PROMPTS, ACTIONS, torch.tensor([0, 1, 2]), torch.full((3,), -1.0), torch.zeros(3),
                         torch.tensor([1.0, -1.0, 0.5]), torch.tensor([1.0, -1.0, 0.5]))  # fmt: skip
    ppo_reads = [_host_reads_in_updaters(PPOUpdater(agent(need_value=True), PPOConfig(chunk_size=c)).update, ppo_batch)
                 for c in (3, 1)]  # fmt: skip
    assert sac_reads[0] == sac_reads[1] and ppo_reads[0] == ppo_reads[1], (sac_reads, ppo_reads)
