"""The dtype policy (docs/devices.md), checked on the CPU: what a GPU would get is decided by functions
of the resolved device, tested here with CUDA's capability queries patched."""

from __future__ import annotations

import pytest
import torch
from llm_fixtures import ACTIONS, PROMPTS, TINY, tiny_model

from sac_glam.config import CriticConfig, ModelConfig
from sac_glam.llm import agent as agent_module
from sac_glam.llm.agent import LLMAgent
from sac_glam.llm.models import autocast_dtype, base_model, quantized_kwargs
from sac_glam.llm.scoring import forward_actions

CPU, CUDA, CUDA1 = torch.device("cpu"), torch.device("cuda"), torch.device("cuda", 1)


@pytest.fixture
def cuda_host(monkeypatch: pytest.MonkeyPatch):
    """A host that has a GPU, which ``train.device=cpu`` must ignore; ``set(bf16=...)`` its kind."""

    class Host:
        def set(self, bf16: bool) -> None:
            monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    host = Host()
    host.set(True)
    return host


def test_4bit_compute_dtype_and_placement_follow_train_device(cuda_host) -> None:
    cpu = quantized_kwargs(CPU)  # train.device=cpu on a GPU host: the CPU's fp32, on the CPU
    assert cpu["quantization_config"].bnb_4bit_compute_dtype == torch.float32
    assert cpu["device_map"] == {"": "cpu"}
    gpu = quantized_kwargs(CUDA)  # Ampere+: bf16; "cuda" is the current device (Lamorel servers)
    assert gpu["quantization_config"].bnb_4bit_compute_dtype == torch.bfloat16
    assert gpu["device_map"] == {"": 3} and quantized_kwargs(CUDA1)["device_map"] == {"": 1}
    cuda_host.set(bf16=False)  # V100: fp32, never fp16 (no gradient scaler)
    assert quantized_kwargs(CUDA)["quantization_config"].bnb_4bit_compute_dtype == torch.float32
    for kwargs in (cpu, gpu):
        assert kwargs["quantization_config"].bnb_4bit_quant_type == "nf4"
        assert kwargs.get("dtype", kwargs.get("torch_dtype")) == torch.float32  # the unquantised modules


def test_autocast_only_where_bf16_is_native(cuda_host) -> None:
    assert autocast_dtype(CPU) is None and autocast_dtype(torch.device("meta")) is None
    assert autocast_dtype(CUDA) == torch.bfloat16
    cuda_host.set(bf16=False)
    assert autocast_dtype(CUDA) is None


@pytest.mark.parametrize("name", ["tiny-t5", "tiny-causal"])
def test_4bit_model_keeps_embeddings_norms_and_lm_head_in_fp32(name: str) -> None:
    import bitsandbytes as bnb

    lm = tiny_model(name, lora=True, load_in_4bit=True, lora_r=4, lora_alpha=8)
    net = base_model(lm.model)
    quantized = [p for p in net.parameters() if isinstance(p, bnb.nn.Params4bit)]
    others = {n: p.dtype for n, p in net.named_parameters() if not isinstance(p, bnb.nn.Params4bit)}
    assert quantized and others
    assert set(others.values()) == {torch.float32}, {n: d for n, d in others.items() if d != torch.float32}
    assert net.get_output_embeddings().weight.dtype == torch.float32


def _record_dtypes(module: torch.nn.Module, seen: list[torch.dtype]) -> torch.utils.hooks.RemovableHandle:
    return module.register_forward_hook(lambda m, args, out: seen.append(out.dtype))


@pytest.mark.parametrize("name", ["tiny-t5", "tiny-causal"])
def test_logits_and_log_softmax_stay_fp32_under_bf16_autocast(name: str) -> None:
    lm = tiny_model(name)
    net = base_model(lm.model)
    head_out: list[torch.dtype] = []
    inner_out: list[torch.dtype] = []
    _record_dtypes(net.get_output_embeddings(), head_out)
    inner = next(m for n, m in net.named_modules() if isinstance(m, torch.nn.Linear) or n.endswith("c_attn"))
    _record_dtypes(inner, inner_out)
    with torch.no_grad():
        ref = forward_actions(lm.model, lm.tokenizer, PROMPTS, ACTIONS, normalization="sum")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fwd = forward_actions(lm.model, lm.tokenizer, PROMPTS, ACTIONS, normalization="sum")
    assert torch.bfloat16 in inner_out  # the body ran in bf16 ...
    assert set(head_out) == {torch.float32}  # ... the output projection in fp32
    assert fwd.log_pi_BA.dtype == fwd.logp_BA.dtype == torch.float32
    # bf16 activations move log pi a little, the fp32 head keeps it from moving more.
    torch.testing.assert_close(fwd.log_pi_BA, ref.log_pi_BA, atol=0.1, rtol=0)


def test_agent_autocasts_its_llm_and_keeps_heads_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    agent = LLMAgent(ModelConfig(name="tiny-t5", tiny=TINY), CriticConfig(width=16), need_value=True)
    inner_out: list[torch.dtype] = []
    _record_dtypes(base_model(agent.llm).encoder.block[0].layer[0].SelfAttention.q, inner_out)
    with torch.no_grad():
        agent.evaluate(PROMPTS, ACTIONS, q=True, v=True)
        assert set(inner_out) == {torch.float32}  # the CPU: no autocast
        monkeypatch.setattr(agent_module, "autocast_dtype", lambda device: torch.bfloat16)
        inner_out.clear()
        out = agent.evaluate(PROMPTS, ACTIONS, q=True, v=True, target_q=True)
    assert set(inner_out) == {torch.bfloat16}
    assert out.q_KBA is not None and out.target_q_KBA is not None and out.v_B is not None
    for t in (out.log_pi_BA, out.q_KBA, out.target_q_KBA, out.v_B):
        assert t.dtype == torch.float32
