"""Configs: every file loads and validates; bad keys, types and values are errors that say what is allowed."""

import subprocess
import sys
import typing

import pytest

from sac_glam.config import (
    DEFAULT_CONFIG,
    Config,
    ConfigError,
    available_configs,
    config_diff,
    first_existing,
    from_raw,
    to_dict,
)
from sac_glam.config.validation import RANGES, Range, numeric_keys
from sac_glam.run.configs import load_config


@pytest.mark.parametrize("name", available_configs())
def test_every_config_loads_and_validates(name):
    cfg = load_config(name)
    assert isinstance(cfg, Config)
    assert cfg.name == name
    # Round trip through plain data (what a checkpoint and config.yaml store).
    assert from_raw(to_dict(cfg)) == cfg


def test_paper_presets_follow_tables_2_and_3():
    sac, her = load_config("sac_glam"), load_config("sac_glam_her")
    for cfg in (sac, her):
        assert (cfg.sac.update_every, cfg.sac.n_updates, cfg.sac.batch_size, cfg.sac.gamma) == (
            32,
            2,
            256,
            0.99,
        )
        assert (cfg.sac.actor_lr, cfg.sac.critic_lr, cfg.sac.alpha_lr) == (1e-4, 1e-4, 2e-3)
        assert (cfg.buffer.n_step, cfg.buffer.capacity, cfg.train.total_steps) == (3, 100_000, 400_000)
        assert cfg.model.name == "google/flan-t5-base" and cfg.model.lora and cfg.model.load_in_4bit
        assert cfg.env.n_envs == 32 and cfg.env.n_objects == 6 and cfg.env.sequential_goals
    assert (sac.sac.alpha_init, sac.sac.target_entropy, sac.buffer.her) == (0.005, 0.0, False)
    assert (her.sac.alpha_init, her.sac.target_entropy, her.buffer.her) == (0.05, 0.01, True)
    assert (her.buffer.her_strategy, her.buffer.her_ratio) == ("ratio", 0.5)


def test_default_is_sac_her_on_the_ablation_environment():
    cfg = load_config(DEFAULT_CONFIG)
    assert cfg.train.algo == "sac" and cfg.buffer.her and cfg.train.backend == "local"
    assert cfg.env.n_objects == 3 and not cfg.env.sequential_goals
    assert cfg.model.name.startswith("tiny-")


def test_overrides_reach_keys_the_yaml_leaves_at_defaults():
    cfg = load_config("sac_glam", ["sac.chunk_size=17", "train.seed=3", "model.name=tiny-t5"])
    assert (cfg.sac.chunk_size, cfg.train.seed, cfg.model.name) == (17, 3, "tiny-t5")


@pytest.mark.parametrize("override,fragment", [
    ("sac.gama=0.9", "unknown key sac.gama; allowed keys of sac: gamma"),
    ("bogus=1", "unknown key bogus"),
    ("model.normalization=softmax", "allowed values: 'sum', 'constrained', 'mean'"),
    ("critic.input=obs", "allowed values: 'prompt_action', 'prompt'"),
    ("buffer.her_strategy=future", "allowed values: 'uniform', 'ratio', 'prior'"),
    ("env.n_objects=three", "env.n_objects: expected an integer"),
    ("sac.batch_size=0", "sac.batch_size: must be >= 1"),
    ("buffer.her_ratio=1.5", "buffer.her_ratio: must be in [0, 1]"),
    ("env.goal_types=[grasp,fly]", "allowed: grasp, grow, grow_then_grasp, grow_then_grow"),
    ("model.lora=false", "model.load_in_4bit=true needs model.lora=true"),
])  # fmt: skip
def test_bad_values_name_the_key_and_what_is_allowed(override, fragment):
    with pytest.raises(ConfigError, match=None) as err:
        load_config("sac_glam", [override])
    assert fragment in str(err.value)


def _outside(allowed: Range, kind: type) -> list[float]:
    """Values of type ``kind`` just outside each finite bound of ``allowed`` (an open bound itself)."""
    step = 1 if kind is int else 0.5
    out = []
    if allowed.low is not None:
        out.append(kind(allowed.low if allowed.low_open else allowed.low - step))
    if allowed.high is not None:
        out.append(kind(allowed.high if allowed.high_open else allowed.high + step))
    return out


def _kind(cfg: Config, key: str) -> type:
    *sections, attr = key.split(".")
    owner: object = cfg
    for section in sections:
        owner = getattr(owner, section)
    return float if "float" in str(typing.get_type_hints(type(owner))[attr]) else int


@pytest.mark.parametrize("key", numeric_keys(Config))
def test_every_numeric_key_refuses_a_value_outside_its_range_in_one_line(key):
    # Walks the dataclasses, so a new int or float key without a range fails here (KeyError).
    allowed, kind = RANGES[key], _kind(Config(), key)
    values = _outside(allowed, kind)
    assert values, f"{key}: {allowed} has no finite bound"
    for value in values:
        with pytest.raises(ConfigError) as err:
            load_config(DEFAULT_CONFIG, [f"{key}={value}"])
        assert str(err.value) == f"{key}: must be {allowed}, got {value}"
    assert not allowed.allows(float("nan"))  # NaN compares False with everything: it must not slip through


@pytest.mark.parametrize("override,message", [
    ("train.total_steps=-5", "train.total_steps: must be >= 1, got -5"),
    ("train.total_steps=0", "train.total_steps: must be >= 1, got 0"),
    ("train.threads=-1", "train.threads: must be >= 0, got -1"),
])  # fmt: skip
def test_issue_nonsense_is_refused_by_the_launcher_in_one_line(tmp_path, override, message):
    run = subprocess.run([sys.executable, "-m", "sac_glam.cli.launch", override, f"train.run_dir={tmp_path}"],
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 2 and run.stderr.strip() == f"lamorel-launch: config error: {message}"
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_a_fractional_target_entropy_above_one_is_refused():
    with pytest.raises(ConfigError) as err:
        load_config(DEFAULT_CONFIG, ["sac.target_entropy_mode=fraction", "sac.target_entropy=1.5"])
    assert str(err.value).startswith("sac.target_entropy: must be in [0, 1] with sac.target_entropy_mode")


@pytest.mark.parametrize("name,overrides,fragment", [
    # What the environment or the model would refuse once built is refused at load, in config terms.
    ("sac_glam", ["env.n_objects=1"], "env.n_objects: 1 is not allowed; the train goals of this config need 4"),
    ("sac_glam_her_cpu", ["env.n_objects=1"], "grasp goals alone need 1 (env.goal_types=[grasp])"),
    ("sac_glam_her_cpu", ["env.n_objects=97"], "need 2 to 96 objects per scene"),
    ("sac_glam_her_cpu", ["model.tiny.n_heads=5"], "model.tiny.d_model (64) must be divisible by model.tiny.n_heads (5)"),
    ("sac_glam_her_cpu", ["model.tiny.n_heads=0"], "model.tiny.n_heads: must be >= 1"),
    ("sac_glam_her_cpu", ["model.family=seq2seq"], "model.family='seq2seq' contradicts model.name='tiny-causal'"),
    ("sac_glam", ["critic.share_llm=false", "critic.target=adapter"], "critic.target='adapter' needs critic.share_llm=true"),
    ("sac_glam", ["critic.target=network"], "critic.target='network' needs critic.share_llm=false"),
])  # fmt: skip
def test_env_and_model_constraints_are_config_errors(name, overrides, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(name, overrides)
    assert fragment in str(err.value)


def test_env_constraints_accept_what_the_environment_accepts():
    # One object is enough when every goal is a grasp (the environment's own rule, tests/test_env.py).
    cfg = load_config("sac_glam_her_cpu", ["env.n_objects=1", "env.goal_types=[grasp]"])
    assert cfg.env.n_objects == 1
    assert load_config("sac_glam", ["env.n_objects=96"]).env.n_objects == 96


@pytest.mark.parametrize("yaml_text,overrides,fragment", [
    ("train: {seed: [1\n", [], "x.yaml: ParserError"),
    ("defaults:\n  - not_there\n", [], "x.yaml: MissingConfigException"),
    ("train: {seed: 1}\n", ["train.seed=["], "overrides ['train.seed=[']: ParserError"),
    ("train: {seed: 1}\n", ["train.seed=${nope}"], "InterpolationKeyError: Interpolation key 'nope' not found"),
])  # fmt: skip
def test_unreadable_yaml_or_override_is_a_config_error_naming_where(tmp_path, yaml_text, overrides, fragment):
    (tmp_path / "x.yaml").write_text(yaml_text)
    with pytest.raises(ConfigError) as err:
        load_config("x", overrides, tmp_path)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_missing_config_directory_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no such directory"):
        load_config("sac_glam", [], tmp_path / "nowhere")


def test_first_existing_takes_the_first_place_of_the_right_kind(tmp_path):
    (tmp_path / "f").write_text("")
    (tmp_path / "d").mkdir()
    assert first_existing([tmp_path / "none", tmp_path / "d", tmp_path / "f"], "x", "-") == tmp_path / "f"
    assert first_existing([tmp_path / "f", tmp_path / "d"], "x", "-", directory=True) == tmp_path / "d"
    with pytest.raises(ConfigError) as err:  # a directory is not the file looked for
        first_existing([tmp_path / "none", tmp_path / "d"], "script", "write one")
    assert str(err.value) == f"no script found; looked for {tmp_path / 'none'}, {tmp_path / 'd'}: write one"


def test_no_config_directory_or_rl_script_is_one_line_naming_every_place(tmp_path, monkeypatch):
    """What an installed package run from a directory without a clone says (no traceback: ConfigError)."""
    import sac_glam.cli.launch as launch
    import sac_glam.config.loading as loading

    root = tmp_path.resolve()
    monkeypatch.chdir(root)
    monkeypatch.setenv("SAC_GLAM_CONFIG_DIR", str(root / "gone"))
    monkeypatch.setattr(loading, "__file__", str(root / "site" / "sac_glam" / "config" / "loading.py"))
    monkeypatch.setattr(launch, "__file__", str(root / "site" / "sac_glam" / "cli" / "launch.py"))
    with pytest.raises(ConfigError) as err:
        loading.config_dir()
    places = [root / "gone", root / "site/sac_glam/lamorel_configs", root / "site/lamorel_configs",
              root / "lamorel_configs"]  # fmt: skip
    assert str(err.value) == (
        f"no config directory found; looked in {', '.join(map(str, places))}: set SAC_GLAM_CONFIG_DIR to a "
        "lamorel_configs/ directory (a clone's, or a copy), or pass --config-path"
    )
    with pytest.raises(ConfigError) as err:
        launch.rl_script_path()
    script = "experiments/lamorel_rl_script.py"
    assert str(err.value).startswith(
        f"no Lamorel RL script found; looked for {root / 'site' / script}, {root / script}: "
        f"train.backend=lamorel runs {script} of a clone"
    )
    assert "\n" not in str(err.value)


def test_unknown_config_name_lists_available():
    with pytest.raises(ConfigError) as err:
        load_config("does_not_exist")
    assert DEFAULT_CONFIG in str(err.value)


def test_config_diff_names_changed_keys():
    a, b = to_dict(load_config("sac_glam")), to_dict(load_config("sac_glam_her"))
    diff = config_diff(a, b, ignore=["name"])
    assert set(diff) == {"sac.alpha_init", "sac.target_entropy", "buffer.her", "buffer.her_strategy"} - (
        {"buffer.her_strategy"} if a["buffer"]["her_strategy"] == "ratio" else set()
    )


def test_cli_goals_prints_one_goal_per_line():
    out = subprocess.run([sys.executable, "-m", "sac_glam.cli", "goals", "--split", "train"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    lines = out.splitlines()
    assert len(lines) == 8470 and lines[0] == "Grasp red door" and "Grow red dog then grasp blue cat" in lines
    bad = subprocess.run(
        [sys.executable, "-m", "sac_glam.cli", "goals", "--split", "val"], capture_output=True, text=True
    )
    assert bad.returncode != 0 and "invalid choice" in bad.stderr


def test_launch_reports_config_errors_without_traceback():
    bad = subprocess.run(
        [sys.executable, "-m", "sac_glam.cli.launch", "sac.gama=1"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "unknown key sac.gama" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("name", ["sac_glam", "sac_glam_her", "ppo_glam"])
def test_lamorel_variants_change_only_where_the_llm_runs(name):
    base, lam = to_dict(load_config(name)), to_dict(load_config(f"{name}_lamorel"))
    diff = config_diff(base, lam, ignore=["name"])
    algo_keys = {k for k in diff if k.split(".")[0] in ("sac", "buffer")} if name == "ppo_glam" else set()
    assert algo_keys <= {"sac.alpha_init", "sac.target_entropy"}  # unused by PPO
    assert {k.split(".")[0] for k in set(diff) - algo_keys} <= {"lamorel_args", "rl_script_args", "train"}
    assert {k for k in diff if k.startswith("train.")} == {"train.backend", "train.device"}
