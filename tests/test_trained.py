"""``sac-glam eval RUN_DIR``: a run's trained agent, loaded from final/ or its checkpoint, evaluated by the
training loop's own evaluation; ``--show``; result.json is strict JSON."""

import json
import os

import pytest
from test_train import PPO_TINY, SAC_TINY, signal_at_update

from sac_glam.cli import commands as cli
from sac_glam.run.configs import load_config
from sac_glam.run.learners import SACLearner
from sac_glam.run.train import Preempted, train
from sac_glam.run.trained import load_run, main


def _strict_json(text):
    """json.loads, refusing NaN and Infinity (which Python's json accepts and JSON does not)."""

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def _train(run_dir, name, overrides, *more):
    return train(load_config(name, [*overrides, "train.eval_every=10000", *more, f"train.run_dir={run_dir}"]))


@pytest.mark.parametrize("name,overrides", [("sac_glam_her_cpu", SAC_TINY), ("ppo_glam_cpu", PPO_TINY)])
def test_eval_of_a_finished_run_reproduces_its_final_evaluation_from_final_and_checkpoint(
    tmp_path, capsys, name, overrides
):
    run = tmp_path / "run"
    result = _train(run, name, overrides)
    assert load_run(run).source == "final/"  # written after the last checkpoint
    for source in ("final", "checkpoint"):
        out = tmp_path / f"{source}.json"
        assert main([str(run), "--from", source, "--threads", "1", "--json", str(out)]) == 0
        metrics = _strict_json(out.read_text())
        assert metrics["steps"] == 96
        # The same agent, episodes, seed and sampling as the run's final evaluation: the same numbers.
        assert {k: metrics[k] for k in result.eval} == result.eval, source
    printed = capsys.readouterr().out
    assert "train  grasp" in printed and "test   grasp" in printed  # success per goal type
    # A checkpoint newer than final/ (a finished run extended, say) is what "auto" loads.
    os.utime(run / "checkpoint.pt")
    assert load_run(run).source == "checkpoint.pt"


def test_eval_of_a_stopped_run_loads_its_checkpoint_and_the_cli_names_it(tmp_path, capsys, monkeypatch):
    original = signal_at_update(monkeypatch, SACLearner)
    with pytest.raises(Preempted):
        _train(tmp_path, "sac_glam_her_cpu", SAC_TINY)
    monkeypatch.setattr(SACLearner, "update", original)
    assert not (tmp_path / "final").exists()
    capsys.readouterr()
    assert cli.main(["eval", str(tmp_path), "--episodes", "4", "--split", "test", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert f"{tmp_path}: sac on tiny-causal, checkpoint.pt (step " in out
    assert "test   all" in out and "train  all" not in out


@pytest.mark.parametrize("name,overrides,critic", [
    ("sac_glam_her_cpu", SAC_TINY, "min Q (2)"), ("ppo_glam_cpu", PPO_TINY, "V(s) = "),
])  # fmt: skip
def test_show_prints_each_prompt_the_top_actions_with_pi_and_the_critic(
    tmp_path, capsys, name, overrides, critic
):
    _train(tmp_path, name, overrides)
    capsys.readouterr()
    assert main([str(tmp_path), "--show", "--top", "2", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    steps = out.count("\nstep ")
    assert steps >= 1 and out.count("  | Goal: ") == steps and out.count("  -> ") == steps
    assert out.count(critic) == steps and "episode end: " in out
    rows = [line.split() for line in out.splitlines() if line.startswith("   0.") or line.startswith("   1.")]
    assert len(rows) == 2 * steps  # --top 2
    assert all(0.0 <= float(r[0]) <= 1.0 for r in rows)


def test_result_json_is_strict_json_for_a_run_shorter_than_an_episode(tmp_path):
    # One iteration of 4 environments: no training episode ends, so there is no training success rate.
    _train(tmp_path, "sac_glam_her_cpu", SAC_TINY, "train.total_steps=4")
    result = _strict_json((tmp_path / "result.json").read_text())
    assert result["steps"] == 4 and result["success_rate"] is None
    assert result["eval"]["eval/train/success_rate"] is not None


def test_eval_of_a_directory_without_a_run_is_one_line_and_exit_2(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"sac-glam eval: {tmp_path}/config.yaml not found")


def test_the_launch_summary_of_a_run_without_a_training_episode_says_so(tmp_path, capsys):
    from sac_glam.cli.launch import main as launch

    assert launch(["--config-name", "sac_glam_her_cpu", *SAC_TINY, "train.total_steps=4",
                   f"train.run_dir={tmp_path / 'run'}"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "training episodes: none ended yet" in out and "nan" not in out
