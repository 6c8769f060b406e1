"""Updates and the training loop on a device other than the CPU, checked without a GPU.

``tests/sim_device.py`` simulates a device that raises when a CPU tensor meets one of its tensors, as
CUDA does (issue 13: batches and the absolute target entropy stayed on the CPU and every update on a
GPU crashed). Each run is compared with the same run on the CPU: the simulation computes the same
numbers, so what it checks is where tensors live, not what they hold.
"""

from __future__ import annotations

import json

import pytest
import torch
from llm_fixtures import ACTIONS, PROMPTS, SMALL_TINY_MODEL
from sim_device import SIM, DeviceMixError, simulated_device
from test_sac_updater import TINY, _batch

from sac_glam.algos.updaters import AutoAlpha, PPOUpdater, SACUpdater
from sac_glam.buffers.rollout import PPOBatch
from sac_glam.config import CriticConfig, ModelConfig, PPOConfig, SACConfig
from sac_glam.llm.agent import LLMAgent
from sac_glam.run import factory
from sac_glam.run.configs import load_config
from sac_glam.run.train import train


def test_the_simulated_device_raises_where_cuda_raises_and_only_there():
    with simulated_device():
        x = torch.arange(6.0).to(SIM)
        assert x.device == SIM
        with pytest.raises(DeviceMixError):
            _ = x + torch.ones(6)
        with pytest.raises(DeviceMixError):
            x.gather(0, torch.tensor([0, 1]))
        # What CUDA accepts: CPU scalars, CPU indices in advanced indexing, explicit copies.
        assert float((x * torch.tensor(2.0)).sum()) == 30.0
        assert x[torch.tensor([1, 2])].tolist() == [1.0, 2.0]
        assert (x.cpu() + torch.ones(6)).device.type == "cpu"
        with pytest.raises(TypeError):
            x.numpy()
        assert torch.arange(3, device=SIM).device == SIM
        assert torch.tensor([1, 2], device=SIM).device == SIM


def _params(agent: LLMAgent) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in agent.named_parameters()}


def _check_same_run(
    cpu: tuple[list[dict[str, float]], dict[str, torch.Tensor]],
    dev: tuple[list[dict[str, float]], dict[str, torch.Tensor]],
    exact: bool = True,
    lr: float = 0.0,
) -> None:
    """Same stats at every step and the same parameters, to the bit: the simulation runs the same CPU
    kernels. Not ``exact``: attention on the simulated device takes SDPA's generic kernel (it picks
    kernels by device type), which rounds differently; then stats agree to 1e-5 and parameters to
    Adam's step size (its first steps turn a rounding-level gradient into a step of ``lr``)."""
    (cpu_stats, cpu_params), (dev_stats, dev_params) = cpu, dev
    assert cpu_params.keys() == dev_params.keys()
    if exact:
        assert cpu_stats == dev_stats
        assert all(torch.equal(cpu_params[n], dev_params[n]) for n in cpu_params)
        return
    for c, d in zip(cpu_stats, dev_stats, strict=True):
        assert c == pytest.approx(d, rel=1e-5, abs=1e-6)
    for n in cpu_params:
        assert float((cpu_params[n] - dev_params[n]).abs().max()) <= 2.5 * lr * len(cpu_stats), n


LAYOUTS = {  # (model, critic)
    "shared-backprop": (ModelConfig(name="tiny-t5", tiny=TINY), CriticConfig(width=16)),
    "prompt-input": (
        ModelConfig(name="tiny-t5", tiny=TINY),
        CriticConfig(width=16, input="prompt", backprop_llm=False),
    ),
    "separate": (ModelConfig(name="tiny-t5", tiny=TINY), CriticConfig(width=16, share_llm=False)),
    "lora-adapter-constrained": (
        ModelConfig(name="tiny-t5", tiny=TINY, lora=True, lora_r=4, normalization="constrained"),
        CriticConfig(width=16, target="adapter"),
    ),
    "causal": (ModelConfig(name="tiny-causal", tiny=TINY, normalization="mean"), CriticConfig(width=16)),
}


@pytest.mark.parametrize("mode", ["absolute", "fraction"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_sac_update_on_a_device_equals_the_cpu_update(mode, layout):
    def run(device: torch.device | None) -> tuple[list[dict[str, float]], dict[str, torch.Tensor]]:
        torch.manual_seed(0)
        agent = LLMAgent(*LAYOUTS[layout])
        sdpa.append(_uses_sdpa(agent))
        if device is not None:
            agent.to(device)
        cfg = SACConfig(target_entropy_mode=mode, target_entropy=0.01, chunk_size=2, max_grad_norm=1.0)
        updater = SACUpdater(agent, cfg, tau=0.5)
        stats = [updater.update(_batch()) for _ in range(2)]  # the batch arrives on the CPU
        assert isinstance(updater.alpha, AutoAlpha) and updater.alpha.log_alpha.device == agent.device
        return stats, _params(agent)

    sdpa: list[bool] = []
    cpu = run(None)
    with simulated_device() as device:
        dev = run(device)
    _check_same_run(cpu, dev, exact=not any(sdpa), lr=max(SACConfig().actor_lr, SACConfig().critic_lr))


def _uses_sdpa(agent: LLMAgent) -> bool:
    """Whether the agent's LLM attends through SDPA: tiny-causal always; T5 from transformers 5 on
    (4.x runs T5 in eager attention). Then the simulated device's results are not bitwise the CPU's."""
    return any(getattr(m.config, "_attn_implementation", None) == "sdpa" for m in agent.modules()
               if hasattr(m, "config") and hasattr(m.config, "_attn_implementation"))  # fmt: skip


def test_ppo_update_on_a_device_equals_the_cpu_update():
    batch = PPOBatch(PROMPTS, ACTIONS, torch.tensor([0, 1, 2]), torch.tensor([-1.6, -0.7, -1.8]),
                     torch.tensor([0.1, 0.0, -0.1]), torch.tensor([1.0, -0.5, 0.3]),
                     torch.tensor([1.1, -0.5, 0.2]))  # fmt: skip

    def run(device: torch.device | None) -> tuple[list[dict[str, float]], dict[str, torch.Tensor]]:
        torch.manual_seed(0)
        agent = LLMAgent(ModelConfig(name="tiny-t5", tiny=TINY), CriticConfig(width=16), need_value=True)
        sdpa.append(_uses_sdpa(agent))
        if device is not None:
            agent.to(device)
        updater = PPOUpdater(agent, PPOConfig(chunk_size=2))
        return [updater.update(batch) for _ in range(2)], _params(agent)

    sdpa: list[bool] = []
    cpu = run(None)
    with simulated_device() as device:
        dev = run(device)
    _check_same_run(cpu, dev, exact=not any(sdpa), lr=PPOConfig().lr)


TRAIN = [
    "env.n_envs=4", "env.n_objects=3", "env.max_steps=6", "env.goal_types=[grasp]",
    *SMALL_TINY_MODEL, "critic.width=32", "train.eval_every=0", "train.eval_episodes=4", "train.log_every=8", "train.progress=false",
    "train.tensorboard=false", "train.threads=1", "train.total_steps=32",
]  # fmt: skip
SAC_TRAIN = [*TRAIN, "sac.batch_size=8", "sac.learning_starts=16", "sac.update_every=8", "sac.n_updates=1",
             "sac.chunk_size=4", "buffer.capacity=200", "sac.target_entropy_mode=absolute"]  # fmt: skip
PPO_TRAIN = [*TRAIN, "ppo.n_steps=16", "ppo.epochs=1", "ppo.batch_size=8", "ppo.chunk_size=4"]


@pytest.mark.parametrize("name,overrides", [("sac_glam_her_cpu", SAC_TRAIN), ("ppo_glam_cpu", PPO_TRAIN)])
def test_training_on_a_device_equals_training_on_the_cpu(tmp_path, monkeypatch, name, overrides):
    """The whole loop (acting, learners, updates, checkpoint) with the agent on the device."""

    def run(run_dir: str) -> list[dict[str, float]]:
        train(load_config(name, [*overrides, f"train.run_dir={run_dir}"]))
        records = [
            json.loads(line) for line in (tmp_path / run_dir / "metrics.jsonl").read_text().splitlines()
        ]
        return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in records]

    monkeypatch.chdir(tmp_path)
    cpu = run("cpu")
    with simulated_device() as device:
        monkeypatch.setattr(factory, "device_of", lambda cfg: device)
        dev = run("device")
    assert any("train/critic_loss" in r for r in cpu)
    # Equal up to float rounding: over a whole run a few kernels round differently in the last bit.
    assert len(cpu) == len(dev)
    for c, d in zip(cpu, dev, strict=True):
        assert c == pytest.approx(d, rel=1e-5, abs=1e-5, nan_ok=True)
