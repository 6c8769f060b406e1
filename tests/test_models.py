"""Model loading: the word tokenizer, tiny presets, LoRA, 4-bit nf4 on CPU, save/load, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from llm_fixtures import ACTIONS, PROMPTS, TINY, tiny_model

from sac_glam.config import CriticConfig, ModelConfig
from sac_glam.envs.goals import ALL_ACTIONS, vocabulary
from sac_glam.llm.agent import LLMAgent
from sac_glam.llm.models import ModelLoadError, base_model, load_model
from sac_glam.llm.tokenizer import build_word_tokenizer


def test_word_tokenizer() -> None:
    tok = build_word_tokenizer(vocabulary())
    ids = tok("You see: green water, blue rose")["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["You", "see", ":", "green", "water", ",", "blue", "rose"]
    assert tok.pad_token_id not in (0, None) and tok.eos_token_id is not None
    assert tok.convert_ids_to_tokens([0]) != [tok.pad_token]  # id 0 is a real word
    assert tok("Grasp")["input_ids"] != tok("grasp")["input_ids"]  # case-sensitive
    assert tok("Release")["input_ids"] == [tok.convert_tokens_to_ids("Release")]  # no EOS appended
    encoded = tok(list(ALL_ACTIONS), add_special_tokens=False)["input_ids"]
    assert all(tok.unk_token_id not in seq for seq in encoded)


def test_tiny_presets_and_full_training_flags() -> None:
    for name, family in (("tiny-t5", "seq2seq"), ("tiny-causal", "causal")):
        lm = tiny_model(name)
        assert lm.family == family
        assert all(p.requires_grad for p in lm.model.parameters())  # no LoRA: everything trains
        assert base_model(lm.model).config.vocab_size == len(lm.tokenizer)


def test_lora_targets_per_family() -> None:
    t5 = tiny_model("tiny-t5", lora=True)
    gpt = tiny_model("tiny-causal", lora=True)
    t5_lora = {
        n.split(".lora_")[0].rsplit(".", 1)[-1] for n, _ in t5.model.named_parameters() if "lora_" in n
    }
    gpt_lora = {
        n.split(".lora_")[0].rsplit(".", 1)[-1] for n, _ in gpt.model.named_parameters() if "lora_" in n
    }
    assert t5_lora == {"q", "v"} and gpt_lora == {"c_attn"}
    for lm in (t5, gpt):
        trainable = {n for n, p in lm.model.named_parameters() if p.requires_grad}
        assert trainable and all("lora_" in n for n in trainable)


def test_4bit_without_lora_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"requires model\.lora"):
        load_model(ModelConfig(name="tiny-t5", tiny=TINY, load_in_4bit=True))


@pytest.mark.parametrize("name", ["tiny-t5", "tiny-causal"])
def test_4bit_lora_forward_backward_step_on_cpu(name: str) -> None:
    import bitsandbytes as bnb

    lm = tiny_model(name, lora=True, load_in_4bit=True, lora_r=4, lora_alpha=8)
    n4 = sum(isinstance(m, bnb.nn.Linear4bit) for m in lm.model.modules())
    assert n4 > 0, "the base Linear layers should be 4-bit"
    from sac_glam.llm.scoring import forward_actions

    params = [p for p in lm.model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-2)
    with torch.no_grad():
        before = forward_actions(lm.model, lm.tokenizer, PROMPTS, ACTIONS).logp_BA
    for _ in range(2):  # two steps: lora_A moves once lora_B is non-zero
        fwd = forward_actions(lm.model, lm.tokenizer, PROMPTS, ACTIONS)
        loss = -(fwd.logp_BA * fwd.mask_BA).sum()
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)
        opt.step()
    with torch.no_grad():
        after = forward_actions(lm.model, lm.tokenizer, PROMPTS, ACTIONS).logp_BA
    assert (after * fwd.mask_BA).sum() > (before * fwd.mask_BA).sum()  # the step raised the log-probs


def test_unloadable_model_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub.constants
    import transformers.utils.hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    # transformers 4.x caches the flag here; 5.x asks huggingface_hub.constants (patched above).
    monkeypatch.setattr(transformers.utils.hub, "_is_offline_mode", True, raising=False)
    with pytest.raises(ModelLoadError, match=r"tiny-t5.*tiny-causal") as info:
        load_model(ModelConfig(name="no-such-org/no-such-model"))
    assert "no-such-org/no-such-model" in str(info.value) and "HF_HUB_OFFLINE=1" in str(info.value)
    with pytest.raises(ModelLoadError, match="exists"):
        load_model(ModelConfig(name=str(tmp_path)))  # an existing directory without a model


def _train_one_step(agent: LLMAgent) -> None:
    groups = agent.trainable_parameters()
    opt = torch.optim.SGD(groups.llm_params + groups.critic_params, lr=0.5)
    out = agent.evaluate(PROMPTS, ACTIONS, q=True)
    assert out.q_KBA is not None
    (out.q_KBA.sum() - (out.log_pi_BA * out.mask_BA).sum() - (out.logp_BA * out.mask_BA).sum()).backward()
    opt.step()
    agent.update_target(0.5)


@pytest.mark.parametrize(
    ("name", "lora", "target"),
    [("tiny-t5", False, "head"), ("tiny-t5", True, "adapter"), ("tiny-causal", True, "head")],
)
def test_save_load_gives_identical_scores(name: str, lora: bool, target: str, tmp_path: Path) -> None:
    model_cfg = ModelConfig(name=name, tiny=TINY, lora=lora, lora_r=4, lora_alpha=8)
    critic_cfg = CriticConfig(width=16, target=target)  # type: ignore[arg-type]
    torch.manual_seed(0)
    agent = LLMAgent(model_cfg, critic_cfg)
    _train_one_step(agent)
    agent.save(tmp_path)
    assert (tmp_path / ("adapter" if lora else "model")).is_dir()
    # Same seed -> same random base (tiny presets); LoRA reload restores adapters on top of it.
    torch.manual_seed(0)
    fresh = LLMAgent(model_cfg, critic_cfg)
    with torch.no_grad():
        a = agent.evaluate(PROMPTS, ACTIONS, q=True, target_q=True)
        b0 = fresh.evaluate(PROMPTS, ACTIONS, q=True, target_q=True)
        assert not torch.allclose(a.logp_BA, b0.logp_BA)  # training changed the agent
        fresh.load(tmp_path)
        b = fresh.evaluate(PROMPTS, ACTIONS, q=True, target_q=True)
    assert torch.equal(a.logp_BA, b.logp_BA)
    assert a.q_KBA is not None and b.q_KBA is not None and torch.equal(a.q_KBA, b.q_KBA)
    assert a.target_q_KBA is not None and b.target_q_KBA is not None
    assert torch.equal(a.target_q_KBA, b.target_q_KBA)
    # The in-memory state dict (checkpoints) round-trips too.
    torch.manual_seed(0)
    other = LLMAgent(model_cfg, critic_cfg)
    other.load_trainable_state_dict(agent.trainable_state_dict())
    with (
        torch.no_grad()
    ):  # the same request as the reference (without hidden states: a shorter decoder input)
        c, a_policy = other.evaluate(PROMPTS, ACTIONS), agent.evaluate(PROMPTS, ACTIONS)
    assert torch.equal(a_policy.logp_BA, c.logp_BA)


def test_peft_can_reload_the_saved_adapter(tmp_path: Path) -> None:
    from peft import PeftModel

    from sac_glam.llm.models import build_tiny_model
    from sac_glam.llm.scoring import score_actions

    model_cfg = ModelConfig(name="tiny-t5", tiny=TINY, lora=True, lora_r=4, lora_alpha=8)
    torch.manual_seed(0)
    agent = LLMAgent(model_cfg, CriticConfig(width=16))
    _train_one_step(agent)
    agent.save(tmp_path)
    torch.manual_seed(0)
    base = build_tiny_model("tiny-t5", TINY, agent.tokenizer)
    reloaded = PeftModel.from_pretrained(base, str(tmp_path / "adapter"))
    with torch.no_grad():
        ref = score_actions(agent.llm, agent.tokenizer, PROMPTS, ACTIONS)
        got = score_actions(reloaded, agent.tokenizer, PROMPTS, ACTIONS)
    for r, g in zip(ref, got, strict=True):
        torch.testing.assert_close(g, r, atol=1e-6, rtol=0)
