"""Opt-in text pretraining of the tiny presets (sac_glam/pretrain.py)."""

import numpy as np
import pytest
import torch

from sac_glam.config import ConfigError, ModelConfig, TinyModelConfig
from sac_glam.envs.goals import vocabulary
from sac_glam.llm import models
from sac_glam.llm.models import build_tiny_model, load_model
from sac_glam.llm.tokenizer import build_word_tokenizer
from sac_glam.pretrain import example, mask_one_word, pretrain_tiny, rollout_prompts
from sac_glam.run.configs import load_config

PROMPT = "Goal: Grasp red tomato\nYou see: red tomato, blue desk\nYou are on: nothing\nYou are holding: nothing\nYou have grown: nothing\nAction:"  # fmt: skip
SMALL = TinyModelConfig(d_model=16, n_layers=1, n_heads=2, d_ff=32, pretrain_steps=40, pretrain_corpus=300,
                        pretrain_batch=32, pretrain_lr=3.0e-3)  # fmt: skip


def test_mask_one_word_masks_a_goal_word_only():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(50):
        masked, word = mask_one_word(PROMPT, rng, "<unk>")
        goal, rest = masked.split("\n", 1)
        assert rest == PROMPT.split("\n", 1)[1]  # the scene is never masked
        assert goal.count("<unk>") == 1 and goal.replace("<unk>", word) == "Goal: Grasp red tomato"
        seen.add(word)
    assert seen == {"Grasp", "red", "tomato"}


def test_examples_mix_masking_and_goal_copy():
    rng = np.random.default_rng(0)
    pairs = [example(PROMPT, rng, "<unk>") for _ in range(200)]
    copies = [t for s, t in pairs if s == PROMPT]
    assert set(copies) == {"Grasp red tomato"} and 60 < len(copies) < 140


def test_rollout_prompts_use_train_goals_only():
    from sac_glam.envs.goals import goals

    test_goals = {g.text for g in goals("test")}
    prompts = rollout_prompts(400, seed=0)
    assert len(prompts) == 400
    assert not {p.split("\n", 1)[0].removeprefix("Goal: ") for p in prompts} & test_goals


@pytest.mark.parametrize("name", ["tiny-t5", "tiny-causal"])
def test_pretraining_lowers_the_loss(name):
    tok = build_word_tokenizer(vocabulary())
    torch.manual_seed(0)
    model = build_tiny_model(name, SMALL, tok)
    losses = pretrain_tiny(model, tok, SMALL)
    assert len(losses) == SMALL.pretrain_steps
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
    assert not model.training


def test_pretrained_weights_do_not_depend_on_the_run_seed(monkeypatch, tmp_path):
    monkeypatch.setattr(models, "_PRETRAINED", {})
    monkeypatch.setenv("SAC_GLAM_CACHE", str(tmp_path / "a"))
    cfg = ModelConfig(name="tiny-t5", tiny=SMALL)
    torch.manual_seed(1)
    a = load_model(cfg, pretrain=pretrain_tiny).model.state_dict()
    monkeypatch.setattr(models, "_PRETRAINED", {})  # pretrain again, not from either cache
    monkeypatch.setenv("SAC_GLAM_CACHE", str(tmp_path / "b"))
    torch.manual_seed(2)
    b = load_model(cfg, pretrain=pretrain_tiny).model.state_dict()
    torch.manual_seed(2)
    c = load_model(ModelConfig(name="tiny-t5", tiny=TinyModelConfig(**{**vars(SMALL), "pretrain_steps": 0})))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c.model.state_dict()[k]) for k in a)


def test_pretraining_config_is_validated():
    with pytest.raises(ConfigError, match=r"model\.tiny\.pretrain_steps"):
        load_config("sac_glam_her_cpu", ["model.tiny.pretrain_steps=-1"])
    with pytest.raises(ConfigError, match=r"model\.tiny\.pretrain_lr"):
        load_config("sac_glam_her_cpu", ["model.tiny.pretrain_lr=0.0"])


def test_pretrained_weights_are_cached_on_disk_and_reused(monkeypatch, tmp_path):
    """A second process (here: an emptied in-memory cache) loads the first one's weights from
    ``SAC_GLAM_CACHE`` instead of pretraining again; another config never reads them."""
    monkeypatch.setenv("SAC_GLAM_CACHE", str(tmp_path))
    monkeypatch.setattr(models, "_PRETRAINED", {})
    cfg = ModelConfig(name="tiny-causal", tiny=SMALL)
    first = load_model(cfg, pretrain=pretrain_tiny).model.state_dict()
    (path,) = (tmp_path / "pretrained").iterdir()
    assert path == models.pretrained_cache_path("tiny-causal", SMALL, build_word_tokenizer(vocabulary()))

    monkeypatch.setattr(models, "_PRETRAINED", {})
    calls = []
    counted = lambda *a: calls.append(a) or pretrain_tiny(*a)  # noqa: E731
    again = load_model(cfg, pretrain=counted).model.state_dict()
    assert not calls and all(torch.equal(first[k], again[k]) for k in first)

    other = TinyModelConfig(**{**vars(SMALL), "pretrain_lr": 1.0e-3})
    load_model(ModelConfig(name="tiny-causal", tiny=other), pretrain=counted)
    assert len(calls) == 1  # another config is pretrained, not served the cached weights
    assert models.pretrained_cache_path("tiny-causal", other, build_word_tokenizer(vocabulary())) != path


def test_an_unwritable_cache_is_skipped_with_a_note(monkeypatch, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("SAC_GLAM_CACHE", str(blocker))  # a file where the folder should be
    monkeypatch.setattr(models, "_PRETRAINED", {})
    load_model(ModelConfig(name="tiny-t5", tiny=SMALL), pretrain=pretrain_tiny)
    assert "pretrained weights not cached at" in capsys.readouterr().out


def test_a_cache_miss_without_a_pretrainer_names_the_fix(monkeypatch, tmp_path):
    """llm/ sits below the pretraining (which reads the environment): without one handed in, a tiny
    config whose weights are neither shipped nor cached is refused in one line, not built untrained."""
    monkeypatch.setenv("SAC_GLAM_CACHE", str(tmp_path))
    monkeypatch.setattr(models, "_PRETRAINED", {})
    with pytest.raises(
        models.ModelLoadError, match=r"pretrain_steps=40: no pretrained weights.*sac-glam pretrain"
    ):
        load_model(ModelConfig(name="tiny-t5", tiny=SMALL))


SMALL_OVERRIDES = ["model.name=tiny-causal", "model.tiny.d_model=16", "model.tiny.n_layers=1", "model.tiny.n_heads=2",
                   "model.tiny.d_ff=32", "model.tiny.pretrain_steps=40", "model.tiny.pretrain_corpus=300",
                   "model.tiny.pretrain_batch=32", "model.tiny.pretrain_lr=3.0e-3"]  # fmt: skip


def test_pretrain_command_writes_the_file_that_runs_then_load(monkeypatch, tmp_path, capsys):
    """``sac-glam pretrain --out DIR`` writes the weights under the name runs look for; placed in the
    shipped folder they are loaded (before the user cache) without pretraining again."""
    from sac_glam.pretrain import main

    monkeypatch.setattr(models, "_PRETRAINED", {})
    monkeypatch.setenv("SAC_GLAM_CACHE", str(tmp_path / "cache"))
    assert main(["--out", str(tmp_path / "shipped"), *SMALL_OVERRIDES]) == 0
    (written,) = (tmp_path / "shipped").iterdir()
    cfg = load_config("sac_glam_her_cpu", SMALL_OVERRIDES).model
    assert (
        written.name
        == models.pretrained_cache_path(cfg.name, cfg.tiny, build_word_tokenizer(vocabulary())).name
    )
    assert main(["--out", str(tmp_path / "shipped"), *SMALL_OVERRIDES]) == 0
    assert "already there" in capsys.readouterr().out

    monkeypatch.setattr(models, "SHIPPED_PRETRAINED", tmp_path / "shipped")
    loaded = load_model(cfg, pretrain=lambda *a: pytest.fail("pretrained again")).model.state_dict()
    shipped = torch.load(written, weights_only=True)
    assert all(torch.equal(loaded[k], shipped[k]) for k in shipped)
    assert not (tmp_path / "cache").exists()  # served from the shipped folder, nothing cached


def test_pretrain_command_does_not_redo_the_shipped_weights(monkeypatch, tmp_path, capsys):
    """The CPU default's weights ship with the package: a bare ``sac-glam pretrain`` points at them
    instead of spending minutes writing a copy into the user cache."""
    from sac_glam.pretrain import main

    monkeypatch.setenv("SAC_GLAM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("sac_glam.pretrain.pretrain_tiny", lambda *a: pytest.fail("pretrained again"))
    assert main([]) == 0
    assert str(models.SHIPPED_PRETRAINED) in capsys.readouterr().out
    assert not (tmp_path / "cache").exists()


def test_pretrain_command_refuses_a_config_without_pretraining(capsys):
    from sac_glam.pretrain import main

    assert main(["--config-name", "sac_glam_her_full_cpu", "model.tiny.pretrain_steps=0"]) == 2
    assert "model.tiny.pretrain_steps=0" in capsys.readouterr().err
    assert main(["model.tiny.pretrain_steps=0"]) == 2
    assert "model.tiny.pretrain_steps=0" in capsys.readouterr().err
    assert main(["model.tiny.pretrain_steps=-1"]) == 2


def _learning_test_model():
    from sac_glam.benchmarks.learning import LEARNING_TESTS, overrides_of

    config, _ = LEARNING_TESTS["sac_her"]
    return load_config(config, overrides_of("sac_her", 0, 1, "unused", [])).model


@pytest.mark.parametrize("preset", ["learning test", "sac_glam_her_full_cpu"])
def test_the_presets_pretrained_weights_ship_with_the_package(preset):
    """The CI learning test must not spend minutes pretraining, nor a full-environment run (whose preset
    has its own model, n_heads 2): each config's weights are in the package, under the name its config
    hashes to, and they are pretrained (the objectives' loss far below a random model's), not a random
    or stale file."""
    cfg = _learning_test_model() if preset == "learning test" else load_config(preset).model
    assert cfg.tiny.pretrain_steps > 0
    tok = build_word_tokenizer(vocabulary())
    shipped = models.SHIPPED_PRETRAINED / models.pretrained_cache_path(cfg.name, cfg.tiny, tok).name
    assert shipped.is_file(), f"write it: sac-glam pretrain --out {models.SHIPPED_PRETRAINED}"

    def loss(state: dict[str, torch.Tensor] | None) -> float:
        torch.manual_seed(0)
        model = build_tiny_model(cfg.name, cfg.tiny, tok)
        if state is not None:
            model.load_state_dict(state)
        # One step at a vanishing learning rate: the loss of one batch of the objectives, at these weights.
        one_batch = {"pretrain_steps": 1, "pretrain_batch": 64, "pretrain_corpus": 500, "pretrain_lr": 1e-12}
        return pretrain_tiny(model, tok, TinyModelConfig(**{**vars(cfg.tiny), **one_batch}))[0]

    assert loss(torch.load(shipped, weights_only=True)) < 0.25 * loss(None)
