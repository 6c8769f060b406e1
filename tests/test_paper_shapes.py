"""The paper's path without downloads: ``sac-glam make-model`` directories as ``model.name=DIR``.

Published architectures (parameter counts of the hub checkpoints), real sub-word tokenizers with T5's
and GPT-2's conventions, the ``from_pretrained`` + LoRA + 4-bit load, scores equal to a one-pair brute
force, and the paper configs ``sac_glam_her`` / ``ppo_glam`` unchanged except the model directory, the
budget and the batch/env sizes: a few updates, a checkpoint, a resume.
"""

import json
import sys

import numpy as np
import pytest
import torch
from llm_fixtures import brute_force_constrained, brute_force_token_logprobs
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from sac_glam.benchmarks.scoring import scene_states
from sac_glam.config import ModelConfig
from sac_glam.envs.goals import ALL_ACTIONS
from sac_glam.llm import make_model as mm
from sac_glam.llm.models import LoadedModel, base_model, load_model
from sac_glam.llm.scoring import forward_actions
from sac_glam.run.checkpoint import load_checkpoint
from sac_glam.run.configs import load_config

#: The hub checkpoints' parameter counts (``sum(p.numel())`` of google/flan-t5-base, t5-small, gpt2).
PUBLISHED_PARAMS = {"flan-t5-base": 247_577_856, "t5-small": 60_506_624, "gpt2": 124_439_808}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {arch: mm.make_model(arch, root / arch, tiny=True) for arch in ("t5-small", "gpt2")}


@pytest.mark.parametrize("arch", mm.ARCHS)
def test_published_architecture_parameter_counts(arch):
    tokenizer = (mm.t5_tokenizer if arch != "gpt2" else mm.gpt2_tokenizer)(
        mm.corpus(), 300 if arch != "gpt2" else 400
    )
    config = mm.model_config(arch, tokenizer)
    with torch.device("meta"):
        model = mm.new_model(config, mm.PUBLISHED[arch].get("tie_word_embeddings", True))
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED_PARAMS[arch]
    if arch == "flan-t5-base":  # T5 v1.1: gated-gelu, untied head; t5-small: relu, tied
        assert config.is_gated_act and model.lm_head.weight is not model.shared.weight
    if arch == "t5-small":
        assert not config.is_gated_act and model.lm_head.weight is model.shared.weight


@pytest.mark.parametrize("arch", ["t5-small", "gpt2"])
def test_tokenizer_loads_with_the_family_conventions(model_dirs, arch):
    tok = AutoTokenizer.from_pretrained(model_dirs[arch])
    assert isinstance(tok, PreTrainedTokenizerFast)
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json"):
        assert (model_dirs[arch] / f).exists(), f
    ids = [tok(a, add_special_tokens=False)["input_ids"] for a in ALL_ACTIONS]
    lengths = {a: len(i) for a, i in zip(ALL_ACTIONS, ids, strict=True)}
    assert lengths["Go to red carnivorous"] > lengths["Grasp"]
    assert len(set(lengths.values())) >= 3, "actions should tokenise into uneven lengths"
    assert len(set(map(tuple, ids))) == len(ids), "two actions tokenise identically"
    assert all(tok.decode(i) == a for a, i in zip(ALL_ACTIONS, ids, strict=True))
    assert tok.unk_token_id not in {t for i in ids for t in i}
    prompt = scene_states(1)[0][0]
    encoded = tok(prompt)["input_ids"]
    if arch == "t5-small":
        assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
        assert encoded[-1] == 1 and 1 not in ids[0]  # </s> ends prompts, never actions
        assert tok.convert_tokens_to_ids("<extra_id_0>") == len(tok) - 1
    else:
        assert tok.eos_token == tok.bos_token == "<|endoftext|>" and tok.pad_token is None
        assert tok.eos_token_id == len(tok) - 1 and tok.eos_token_id not in encoded


def _loaded(model_dir, **overrides) -> LoadedModel:
    torch.manual_seed(0)
    return load_model(ModelConfig(name=str(model_dir), **overrides))


@pytest.mark.parametrize("arch", ["t5-small", "gpt2"])
def test_model_dir_loads_through_from_pretrained_with_lora_and_4bit(model_dirs, arch):
    import bitsandbytes as bnb

    lm = _loaded(model_dirs[arch], lora=True, load_in_4bit=True)
    assert lm.family == ("seq2seq" if arch == "t5-small" else "causal")
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in lm.model.modules())
    trainable = {n for n, p in lm.model.named_parameters() if p.requires_grad}
    targets = ("q", "v") if arch == "t5-small" else ("c_attn",)
    assert trainable and all("lora_" in n for n in trainable)
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable} == set(targets)


@pytest.mark.parametrize("arch", ["t5-small", "gpt2"])
@pytest.mark.parametrize("minibatch_size", [1, 3, 512])
def test_scores_equal_one_pair_brute_force(model_dirs, arch, minibatch_size):
    lm = _loaded(model_dirs[arch], lora=True, load_in_4bit=True)
    prompts, actions = scene_states(3)
    with torch.no_grad():
        fwd = forward_actions(lm.model, lm.tokenizer, prompts, actions, minibatch_size=minibatch_size)
        con = forward_actions(lm.model, lm.tokenizer, prompts, actions, minibatch_size=minibatch_size,
                              normalization="constrained")  # fmt: skip
        for b, (prompt, acts) in enumerate(zip(prompts, actions, strict=True)):
            ref = torch.stack([brute_force_token_logprobs(lm, prompt, a)[0].float().sum() for a in acts])
            torch.testing.assert_close(fwd.logp_BA[b, : len(acts)], ref, atol=1e-4, rtol=0)
            pi = con.log_pi_BA[b, : len(acts)].exp()
            torch.testing.assert_close(pi, brute_force_constrained(lm, prompt, acts), atol=1e-5, rtol=0)


SMALL = [
    "env.n_envs=4", "train.eval_every=0", "train.eval_episodes=4", "train.log_every=16",
    "train.progress=false", "train.tensorboard=false", "train.threads=1", "train.device=cpu",
]  # fmt: skip
SAC_SMALL = [*SMALL, "sac.batch_size=8", "sac.learning_starts=16", "sac.update_every=8", "sac.chunk_size=8",
             "critic.width=32"]  # fmt: skip
PPO_SMALL = [*SMALL, "ppo.n_steps=32", "ppo.epochs=2", "ppo.batch_size=16", "ppo.chunk_size=16"]


def _assert_metrics_not_counted_twice(run_dir, last_step: int) -> None:
    """Each metric at most once per step, steps increasing across the resume, ending at ``last_step``."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for key in set().union(*records) - {"step"}:
        steps = [r["step"] for r in records if key in r]
        assert steps == sorted(set(steps)), key
    assert records[-1]["step"] == last_step


@pytest.mark.parametrize("normalization", ["sum", "constrained"])
def test_sac_glam_her_paper_config_updates_checkpoints_and_resumes(model_dirs, tmp_path, normalization):
    from sac_glam.run.factory import make_backend
    from sac_glam.run.train import train

    def cfg(total):
        overrides = [f"model.name={model_dirs['t5-small']}", f"model.normalization={normalization}",
                     *SAC_SMALL, f"train.total_steps={total}", f"train.run_dir={tmp_path}"]  # fmt: skip
        return load_config("sac_glam_her", overrides)

    first = cfg(64)
    # The paper config itself, not a CPU preset: LoRA + 4-bit, HER ratio 0.5, n = 3, absolute target entropy.
    assert first.model.lora and first.model.load_in_4bit and first.buffer.her and first.buffer.n_step == 3
    assert first.sac.target_entropy_mode == "absolute" and first.sac.n_updates == 2
    backend = make_backend(first)
    before = {k: v.clone() for k, v in backend.state_dict()["agent"]["llm"].items()}
    assert train(first, backend).steps == 64
    ckpt = load_checkpoint(tmp_path)
    # Episodes enter the buffer when they end (n-step returns, HER): at most 15 steps, so by step 64.
    grad_steps = ckpt["loop"]["grad_steps"]
    assert grad_steps >= 2 and grad_steps % 2 == 0  # sac.n_updates = 2 per update
    moved = [k for k, v in ckpt["backend"]["agent"]["llm"].items() if not torch.equal(v, before[k])]
    assert moved, f"no LoRA weight changed in {grad_steps} SAC gradient steps"

    # Reload: a fresh model from DIR (4-bit base re-quantised) + the checkpoint equals the trained one.
    fresh = make_backend(first)
    fresh.load_state_dict(ckpt["backend"])
    for part, tensors in backend.state_dict()["agent"].items():
        for key, value in tensors.items():
            assert torch.equal(value, fresh.state_dict()["agent"][part][key]), (part, key)
    prompts, actions = scene_states(2)
    a, b = backend.act(prompts, actions), fresh.act(prompts, actions)
    assert torch.equal(a.log_pi_BA, b.log_pi_BA)

    resumed = train(cfg(80))  # a larger budget resumes the same run
    assert resumed.steps == 80
    ckpt2 = load_checkpoint(tmp_path)
    assert ckpt2["loop"]["grad_steps"] == grad_steps + 4  # updates at 72 and 80 transitions
    assert ckpt2["loop"]["episodes"] >= ckpt["loop"]["episodes"]
    _assert_metrics_not_counted_twice(tmp_path, 80)


def test_ppo_glam_paper_config_updates_and_resumes(model_dirs, tmp_path):
    from sac_glam.run.train import train

    def cfg(total):
        overrides = [f"model.name={model_dirs['t5-small']}", *PPO_SMALL, f"train.total_steps={total}",
                     f"train.run_dir={tmp_path}"]  # fmt: skip
        return load_config("ppo_glam", overrides)

    assert cfg(32).model.load_in_4bit and cfg(32).train.algo == "ppo"
    assert train(cfg(32)).steps == 32
    ckpt = load_checkpoint(tmp_path)
    assert ckpt["loop"]["grad_steps"] == 4  # 2 epochs x 32 / 16
    assert train(cfg(64)).steps == 64
    ckpt2 = load_checkpoint(tmp_path)
    assert ckpt2["loop"]["grad_steps"] == 8
    _assert_metrics_not_counted_twice(tmp_path, 64)
    assert any(not torch.equal(v, ckpt["backend"]["agent"]["llm"][k])
               for k, v in ckpt2["backend"]["agent"]["llm"].items())  # fmt: skip


def test_make_model_cli_errors_are_one_line(tmp_path, capsys):
    from sac_glam.cli import main

    with pytest.raises(SystemExit):
        main(["make-model", "--arch", "bert", "--out", str(tmp_path / "m")])
    assert "invalid choice: 'bert'" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["make-model", "--arch", "gpt2", "--out", str(tmp_path / "file")]) == 2
    assert capsys.readouterr().err.strip().endswith("exists and is not a directory")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert main(["make-model", "--arch", "gpt2", "--out", str(tmp_path / "full")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--force" in err


def test_flan_t5_head_stays_untied_through_save_and_load(tmp_path):
    """T5 v1.1's own ``lm_head`` on either transformers: 5.x ties T5's head to the embedding unless
    make-model restores ``tie_word_embeddings=False`` (it then built flan-t5-base with 24.7M parameters
    too few); the directory must keep the head, and loading it must not tie or re-initialise it."""
    path = mm.make_model("flan-t5-base", tmp_path / "ft5", tiny=True)
    assert json.loads((path / "config.json").read_text())["tie_word_embeddings"] is False
    built, _ = mm.build("flan-t5-base", tiny=True)
    lora = base_model(load_model(ModelConfig(name=str(path), lora=True)).model)
    assert lora.lm_head.weight.data_ptr() != lora.shared.weight.data_ptr()
    model = load_model(ModelConfig(name=str(path))).model
    assert model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr()
    assert torch.equal(model.lm_head.weight, built.lm_head.weight)  # the saved head, not a fresh one
    assert not torch.equal(model.lm_head.weight[: model.shared.weight.shape[0]], model.shared.weight)
    # A tied weight counts once in parameters(), once per name below: the encoder's and decoder's
    # embeddings are ``shared`` (2 extra names), and a tied head would be a third.
    n = sum(p.numel() for p in model.parameters())
    with_names = sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))
    assert with_names - n == 2 * model.shared.weight.numel()
    assert n == sum(p.numel() for p in mm._load_meta(path).parameters())


def test_make_model_is_deterministic():
    (m1, t1), (m2, t2) = mm.build("t5-small", tiny=True, seed=3), mm.build("t5-small", tiny=True, seed=3)
    assert t1.get_vocab() == t2.get_vocab()
    assert all(
        torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values(), strict=True)
    )
    m3, _ = mm.build("t5-small", tiny=True, seed=4)
    assert not torch.equal(m1.shared.weight, m3.shared.weight)
    assert np.isfinite(m1.shared.weight.detach().numpy()).all()


@pytest.mark.slow
def test_gpu_check_dry_mode_passes(tmp_path):
    """``scripts/gpu_check.sh --dry``: every step of the GPU check on the CPU (about a minute)."""
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHON": sys.executable}
    run = subprocess.run(["bash", str(root / "scripts" / "gpu_check.sh"), "--dry", "--work", str(tmp_path)],
                         env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "GPU CHECK PASSED (dry)" in run.stdout
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    assert {"update/sac/4bit", "update/ppo/fp32", "train", "scorer/gpt2/4bit"} <= set(results)
