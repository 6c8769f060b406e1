"""The Python API (sac_glam/api.py, docs/api.md): the documented example runs as written, and its agent is
the one the run trained (its evaluation repeats the run's last one)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sac_glam import api
from sac_glam.config import Config, ConfigError

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def test_import_sac_glam_stays_light_and_names_the_api():
    code = "import sys, sac_glam; assert 'torch' not in sys.modules; print(sorted(sac_glam.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "load_agent" in out and "train" in out
    import sac_glam

    assert sac_glam.train is api.train and sac_glam.load_agent is api.load_agent
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        sac_glam.nope  # noqa: B018


def test_the_documented_example_runs_and_loads_the_agent_it_trained(tmp_path, monkeypatch):
    (block,) = re.findall(r"## Example.*?```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    monkeypatch.chdir(tmp_path)  # the run directory is relative: runs/...
    # The block runs with the config's train.threads=2; the suite (maybe beside other jobs) keeps one.
    one_thread = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: one_thread(1))
    ns: dict = {}
    exec(compile(block, str(DOC), "exec"), ns)  # the documentation's own code
    result, agent = ns["result"], ns["agent"]
    assert result.steps == 1024 and (tmp_path / result.run_dir / "final").is_dir()
    assert agent.source == "final/" and agent.steps == 1024
    logged = {k: v for k, v in result.eval.items() if k.startswith("eval/train/")}
    assert agent.evaluate(split="train") == pytest.approx(logged, abs=1e-12)
    assert ns["action"] in ns["env"].admissible_actions or ns["done"]
    pi = agent.policy(ns["env"].prompt, ["Grasp", "Release"]) if not ns["done"] else {"a": 1.0}
    assert sum(pi.values()) == pytest.approx(1.0)


def test_make_config_takes_a_name_or_a_config_object():
    by_name = api.make_config("sac_glam_her_cpu", ["train.seed=3", "sac.batch_size=64"])
    by_object = api.make_config(api.make_config("sac_glam_her_cpu"), ["train.seed=3", "sac.batch_size=64"])
    assert by_object.sac.batch_size == by_name.sac.batch_size == 64 and by_object.train.seed == 3
    assert by_name.train.run_dir == "runs/sac_glam_her_cpu/sac.batch_size=64/seed3"
    # A config object keeps the run directory it had; one without gets the command line's default.
    assert by_object.train.run_dir == "runs/sac_glam_her_cpu/seed0"
    assert api.make_config(
        Config(name="x"), ["env.n_objects=3", "env.sequential_goals=false"]
    ).train.run_dir == ("runs/x/env.n_objects=3,env.sequential_goals=false/seed0")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["sac.no_such_key=1"], r"sac\.no_such_key"),
        (["env.n_objects=3", "env.sequential_goals=true"], r"env\.n_objects: 3 is not allowed"),
        (["env.goal_types=[fly]"], r"env\.goal_types: 'fly' is not a goal type"),
        (["train.backend=lamorel"], r"train\.backend=lamorel: the Python API trains in this process"),
        (["sac.batch_size"], r"key=value"),
    ],
)
def test_bad_arguments_are_one_line_config_errors(overrides, message):
    for config in ("sac_glam_her_cpu", Config()):
        with pytest.raises(ConfigError, match=message) as err:
            api.train(config, overrides)
        assert "\n" not in str(err.value)


def test_load_agent_of_a_directory_that_is_not_a_run(tmp_path):
    with pytest.raises(ConfigError, match="not a run directory"):
        api.load_agent(tmp_path)
