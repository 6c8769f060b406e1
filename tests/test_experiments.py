"""The experiment runner: plans, config loading of every experiment, skip/resume, sbatch command lines."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from sac_glam.cli import experiment_plan, experiment_runs, experiments
from sac_glam.cli.experiment_plan import RunSpec, merge_overrides, plan, run_status
from sac_glam.cli.experiment_runs import sbatch_command
from sac_glam.envs.goals import vocabulary
from sac_glam.llm.models import SHIPPED_PRETRAINED, TINY_PRESETS, pretrained_cache_path
from sac_glam.llm.tokenizer import build_word_tokenizer
from sac_glam.run.configs import load_config

# The README's Results table; the ablations' twins: issue 33's 3 seeds; every other CPU twin: [0, 1]
CPU_SEEDS = {"fig2": [0, 1, 2, 3, 4], **{name: [0, 1, 2] for name in ["fig5", "fig6", "fig8", "fig9"]}}
EXPECTED = {  # experiment: (labels, paper seeds)
    "fig2": (["SAC-GLAM", "SAC-GLAM+HER", "PPO-GLAM"], [0, 1, 2, 3]),  # CPU: CPU_SEEDS
    "fig5": (["obs+action.head-only", "obs.head-only", "obs+action.shared", "obs.shared", "obs+action.separate"], [0, 1]),
    "fig6": (["PPO.1024x16", "PPO.1024x32", "PPO.2048x16", "PPO.2048x32", "SAC.32x1", "SAC.32x2", "SAC.128x1", "SAC.128x2", "SAC.32x4"], [0, 1]),
    "fig8": (["HER+uniform", "HER+ratio", "HER+prior"], [0, 1]),
    "fig9": (["n1", "n3.capacity-x1", "n5", "capacity-x0.5", "capacity-x5"], [0, 1]),
}  # fmt: skip


class _Children:
    """``subprocess.Popen`` in the runner replaced by stand-ins (:func:`_fake_popen`): each records its
    command and stdout, says "still running" for ``busy_polls`` polls, then exits with ``code``."""

    def __init__(self, code: int, busy_polls: int) -> None:
        self.code, self.busy_polls = code, busy_polls
        self.started: list[_FakeChild] = []
        self.alive = self.peak = 0  # children started and not yet seen to exit; the most at once


class _FakeChild:
    def __init__(self, children: _Children, cmd: list[str], stdout: object) -> None:
        self.children, self.cmd, self.stdout, self.polls = children, cmd, stdout, 0
        children.started.append(self)
        children.alive += 1
        children.peak = max(children.peak, children.alive)

    def poll(self) -> int | None:
        self.polls += 1
        if self.polls <= self.children.busy_polls:
            return None
        if self.polls == self.children.busy_polls + 1:
            self.children.alive -= 1
        return self.children.code

    def wait(self) -> int:
        return self.children.code


def _fake_popen(monkeypatch: pytest.MonkeyPatch, code: int = 0, busy_polls: int = 0) -> _Children:
    children = _Children(code, busy_polls)

    def popen(cmd: list[str], **kwargs: object) -> _FakeChild:
        return _FakeChild(children, cmd, kwargs.get("stdout"))

    monkeypatch.setattr(experiment_runs.subprocess, "Popen", popen)
    monkeypatch.setattr(experiment_runs, "POLL_S", 0.0)
    return children


def test_every_paper_study_is_defined() -> None:
    assert set(experiment_plan.load_experiments()) >= set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("cpu", [False, True])
def test_plan_lists_label_config_seed_run_dir_and_every_config_loads(
    name: str, cpu: bool, tmp_path: Path
) -> None:
    labels, seeds = EXPECTED[name]
    specs = plan(name, cpu=cpu, results_dir=tmp_path)
    exp = f"{name}-cpu" if cpu else name
    want_seeds = CPU_SEEDS.get(name, [0, 1]) if cpu else seeds
    assert [(s.label, s.seed) for s in specs] == [(lab, seed) for lab in labels for seed in want_seeds]
    for s in specs:
        assert s.run_dir == tmp_path / exp / s.label / f"seed{s.seed}"
        assert s.config.endswith("_cpu") == cpu
        cfg = load_config(s.config, [*s.overrides, f"train.seed={s.seed}", f"train.run_dir={s.run_dir}"])
        assert cfg.train.seed == s.seed and cfg.train.run_dir == str(s.run_dir)
        if cpu:
            assert cfg.model.name in TINY_PRESETS and cfg.train.total_steps <= 20_000  # offline, CPU-sized


def test_comparisons_set_the_studied_keys() -> None:
    def cfgs(name: str, cpu: bool = False) -> dict[str, object]:
        return {s.label: load_config(s.config, s.overrides) for s in plan(name, cpu=cpu, seeds=[0])}

    fig2 = cfgs("fig2")
    assert fig2["SAC-GLAM+HER"].buffer.her and not fig2["SAC-GLAM"].buffer.her  # type: ignore[attr-defined]
    assert fig2["PPO-GLAM"].train.algo == "ppo" and fig2["SAC-GLAM"].train.total_steps == 400_000  # type: ignore[attr-defined]
    # Figure 2's CPU twin: every method from the same text-pretrained tiny model, the file that ships
    tok = build_word_tokenizer(vocabulary())
    files = {
        pretrained_cache_path(c.model.name, c.model.tiny, tok).name for c in cfgs("fig2", cpu=True).values()
    }  # type: ignore[attr-defined]
    assert len(files) == 1 and (SHIPPED_PRETRAINED / files.pop()).is_file()
    fig5 = cfgs("fig5")
    variants = {(c.critic.input, c.critic.backprop_llm) for c in fig5.values()}  # type: ignore[attr-defined]
    assert variants == {
        ("prompt_action", True),
        ("prompt_action", False),
        ("prompt", True),
        ("prompt", False),
    }
    # The CPU twin shares the actor's LLM in the paper's four arms; its reference arm is the CPU default.
    fig5_cpu = cfgs("fig5", cpu=True)
    default = load_config("sac_glam_her_cpu").critic
    assert {lab for lab, c in fig5_cpu.items() if not c.critic.share_llm} == {"obs+action.separate"}  # type: ignore[attr-defined]
    assert fig5_cpu["obs+action.separate"].critic == default  # type: ignore[attr-defined]
    assert all(c.env.n_objects == 3 and not c.env.sequential_goals for c in fig5.values())  # type: ignore[attr-defined]
    fig6 = cfgs("fig6")
    assert {(c.ppo.n_steps, c.ppo.epochs) for lab, c in fig6.items() if lab.startswith("PPO")} == {  # type: ignore[attr-defined]
        (1024, 16), (1024, 32), (2048, 16), (2048, 32)}  # fmt: skip
    assert {(c.sac.update_every, c.sac.n_updates) for lab, c in fig6.items() if lab.startswith("SAC")} == {  # type: ignore[attr-defined]
        (32, 1), (32, 2), (128, 1), (128, 2), (32, 4)}  # fmt: skip
    default = load_config("sac_glam_her_cpu").sac
    assert (default.update_every, default.n_updates) == (32, 4)  # SAC.32x4 is the CPU default
    assert {c.buffer.her_strategy for c in cfgs("fig8").values()} == {"uniform", "ratio", "prior"}  # type: ignore[attr-defined]
    fig9 = cfgs("fig9")
    assert {c.buffer.n_step for c in fig9.values()} == {1, 3, 5}  # type: ignore[attr-defined]
    assert {c.buffer.capacity for c in fig9.values()} == {50_000, 100_000, 500_000}  # type: ignore[attr-defined]
    fig9_cpu = cfgs("fig9", cpu=True)
    assert {c.buffer.capacity for c in fig9_cpu.values()} == {2_500, 5_000, 25_000}  # type: ignore[attr-defined]


def test_seeds_and_command_line_overrides_win(tmp_path: Path) -> None:
    specs = plan(
        "fig8",
        cpu=True,
        seeds=[7],
        results_dir=tmp_path,
        overrides=["train.total_steps=64", "train.threads=1"],
    )
    assert {s.seed for s in specs} == {7}
    for s in specs:
        assert "train.total_steps=64" in s.overrides and "train.total_steps=10000" not in s.overrides
        assert experiment_plan.budget(s) == 64


def test_merge_overrides_keeps_the_last_value_of_each_key() -> None:
    assert merge_overrides(["a=1", "b=2"], ["a=3"], ["+c=4"]) == ("b=2", "a=3", "+c=4")


def _spec(tmp_path: Path, seed: int = 0) -> RunSpec:
    return RunSpec(
        "fig2-cpu",
        "SAC-GLAM",
        "sac_glam_cpu",
        ("train.total_steps=96",),
        seed,
        tmp_path / "fig2-cpu" / "SAC-GLAM" / f"seed{seed}",
    )


def test_run_status_skips_finished_and_resumes_unfinished(tmp_path: Path) -> None:
    run = _spec(tmp_path).run_dir
    assert run_status(run, 96) == "new"
    run.mkdir(parents=True)
    (run / "checkpoint.pt").write_bytes(b"")
    assert run_status(run, 96) == "resume"
    (run / "result.json").write_text(json.dumps({"steps": 64}))
    assert run_status(run, 96) == "resume"  # a finished shorter run, budget raised since
    (run / "result.json").write_text(json.dumps({"steps": 96}))
    assert run_status(run, 96) == "done"
    (run / "result.json").write_text("{torn")
    assert run_status(run, 96) == "resume"


def test_run_status_counts_a_run_that_used_its_time_limit_as_done(tmp_path: Path) -> None:
    """A ``train.time_limit_s`` run ends before ``total_steps``: done once its clock reached the limit,
    resumed when the limit has been raised since."""
    run = _spec(tmp_path).run_dir
    run.mkdir(parents=True)
    (run / "checkpoint.pt").write_bytes(b"")
    (run / "result.json").write_text(json.dumps({"steps": 64, "wall_s": 100.5}))
    assert run_status(run, 96, time_limit_s=100.0) == "done"
    assert run_status(run, 96, time_limit_s=200.0) == "resume"
    assert run_status(run, 96) == "resume"  # no limit: total_steps decides
    (run / "result.json").write_text(json.dumps({"steps": 64}))  # written before result.json had a clock
    assert run_status(run, 96, time_limit_s=100.0) == "resume"


def test_run_local_skips_done_and_launches_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    done, todo = _spec(tmp_path, 0), _spec(tmp_path, 1)
    done.run_dir.mkdir(parents=True)
    (done.run_dir / "result.json").write_text(json.dumps({"steps": 96}))
    todo.run_dir.mkdir(parents=True)
    (todo.run_dir / "checkpoint.pt").write_bytes(b"")
    children = _fake_popen(monkeypatch)
    assert experiment_runs.run_local([done, todo]) == 0
    out = capsys.readouterr().out
    assert "seed 0" in out and "done, skipped" in out and "seed 1" in out and "resuming" in out
    assert len(children.started) == 1
    cmd = children.started[0].cmd
    assert cmd[:3] == [sys.executable, "-m", "sac_glam.cli.launch"]
    assert cmd[3:] == [
        "--config-name",
        "sac_glam_cpu",
        "train.total_steps=96",
        "train.seed=1",
        f"train.run_dir={todo.run_dir}",
    ]


def test_run_local_stops_with_75_when_a_run_is_preempted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_popen(monkeypatch, code=experiment_runs.EXIT_PREEMPTED)
    assert (
        experiment_runs.run_local([_spec(tmp_path, 0), _spec(tmp_path, 1)]) == experiment_runs.EXIT_PREEMPTED
    )


def test_exit_code_matches_the_training_loop() -> None:
    from sac_glam.run.train import EXIT_PREEMPTED

    assert experiment_runs.EXIT_PREEMPTED == EXIT_PREEMPTED


def test_sbatch_command_is_one_array_per_label(tmp_path: Path) -> None:
    specs = plan("fig2", cpu=True, results_dir=tmp_path, overrides=["train.threads=1"])
    sac = [s for s in specs if s.label == "SAC-GLAM+HER"]
    cmd = sbatch_command(sac, "slurm/cpu.sbatch", ["--partition=debug"])
    assert cmd[:2] == ["sbatch", "--parsable"]
    assert "--array=0,1,2,3,4" in cmd and "--job-name=fig2-cpu.SAC-GLAM+HER" in cmd
    assert f"--output={tmp_path.resolve()}/fig2-cpu/SAC-GLAM+HER/seed%a/slurm-%A_%a.out" in cmd
    export = next(c for c in cmd if c.startswith("--export="))
    assert export.startswith("--export=ALL,")
    assert f"SAC_GLAM_RESULTS={tmp_path.resolve()}" in export
    assert "SAC_GLAM_EXPERIMENT=fig2-cpu" in export and "SAC_GLAM_LABEL=SAC-GLAM+HER" in export
    i = cmd.index("slurm/cpu.sbatch")
    assert cmd[i - 1] == "--partition=debug"
    assert cmd[i + 1] == "sac_glam_her_cpu" and cmd[i + 2 :] == list(sac[0].overrides)
    with pytest.raises(ValueError, match="one sbatch array per label"):
        sbatch_command(specs, "slurm/cpu.sbatch")


def test_submit_slurm_dry_run_skips_finished_seeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    specs = plan("fig8", cpu=True, results_dir=tmp_path)
    first = specs[0]
    first.run_dir.mkdir(parents=True)
    (first.run_dir / "result.json").write_text(json.dumps({"steps": experiment_plan.budget(first)}))
    assert experiment_runs.submit_slurm(specs, template="slurm/cpu.sbatch", dry_run=True) == []
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("sbatch")]
    assert len(lines) == 3
    assert "--array=1,2 " in lines[0] and "--array=0,1,2 " in lines[1]


def test_cli_dry_run_and_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sac_glam.cli import main

    assert (
        main(
            [
                "experiment",
                "fig5",
                "--cpu",
                "--dry-run",
                "--results-dir",
                str(tmp_path),
                "--seeds",
                "0",
                "train.threads=1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.count("would start") == 5 and "train.threads=1" in out and "train.seed=0" in out
    assert not (tmp_path / "fig5-cpu").exists()  # dry run writes nothing
    specs = plan("fig5", cpu=True, results_dir=tmp_path)
    path = experiment_plan.write_manifest(specs, experiment_plan.load_experiments()["fig5"])
    manifest = json.loads(path.read_text())
    assert list(manifest["runs"]) == EXPECTED["fig5"][0]
    assert len(manifest["panels"]) == 2 and manifest["runs"]["obs.shared"]["seeds"] == [0, 1, 2]


def test_cli_only_takes_labels_and_leaves_overrides_after_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sac_glam.cli import main

    args = ["experiment", "fig2", "--cpu", "--dry-run", "--results-dir", str(tmp_path)]
    assert main([*args, "--only", "SAC-GLAM", "PPO-GLAM", "train.threads=1"]) == 0
    out = capsys.readouterr().out
    starts = [line for line in out.splitlines() if "would start" in line]
    assert len(starts) == 2 * len(CPU_SEEDS["fig2"]) and not any("SAC-GLAM+HER" in line for line in starts)
    assert out.count("train.threads=1") >= len(starts)  # in every run's command
    with pytest.raises(SystemExit):  # overrides alone are not a label
        main([*args, "--only", "train.threads=1"])


def test_manifest_keeps_labels_and_seeds_of_earlier_invocations(tmp_path: Path) -> None:
    """Two runners with --only (one label each, different seeds) leave one manifest listing both."""
    exp = experiment_plan.load_experiments()["fig2"]
    specs = plan("fig2", cpu=True, results_dir=tmp_path)
    experiment_plan.write_manifest([s for s in specs if s.label == "PPO-GLAM" and s.seed == 1], exp)
    experiment_plan.write_manifest([s for s in specs if s.label == "SAC-GLAM" and s.seed == 0], exp)
    path = experiment_plan.write_manifest([s for s in specs if s.label == "PPO-GLAM" and s.seed == 2], exp)
    runs = json.loads(path.read_text())["runs"]
    assert list(runs) == ["SAC-GLAM", "PPO-GLAM"]  # the experiment's order, not the invocations'
    assert runs["PPO-GLAM"]["seeds"] == [1, 2] and runs["SAC-GLAM"]["seeds"] == [0]


def test_bad_definitions_are_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("x:\n  runs:\n    - {label: 'a b', config: sac_glam}\n")
    with pytest.raises(ValueError, match="label"):
        experiment_plan.load_experiments(bad)
    bad.write_text("x:\n  runs:\n    - {label: a, config: sac_glam, panels: [nope]}\n")
    with pytest.raises(ValueError, match="panels"):
        experiment_plan.load_experiments(bad)
    bad.write_text("x:\n  order: random\n  runs:\n    - {label: a, config: sac_glam}\n")
    with pytest.raises(ValueError, match="order 'random'; allowed: 'label'"):
        experiment_plan.load_experiments(bad)
    with pytest.raises(KeyError, match="no experiment"):
        plan("nope")


@pytest.mark.parametrize("cpu", [False, True])
def test_race_full_pairs_each_seeds_methods_on_one_clock(cpu: bool, tmp_path: Path) -> None:
    """race-full (issue 34, item 3): seed-major, so that --jobs 2 runs SAC-GLAM+HER and PPO-GLAM of a
    seed side by side; both on the full environment with the same time limit, steps only a ceiling."""
    specs = plan("race-full", cpu=cpu, results_dir=tmp_path)
    seeds = [0, 1, 2, 3, 4] if cpu else [0, 1, 2, 3]
    assert [(s.label, s.seed) for s in specs] == [
        (lab, k) for k in seeds for lab in ("SAC-GLAM+HER", "PPO-GLAM")
    ]
    sac, ppo = (load_config(s.config, s.overrides) for s in specs[:2])
    assert sac.train.algo == "sac" and sac.buffer.her and ppo.train.algo == "ppo"
    assert sac.train.time_limit_s == ppo.train.time_limit_s == (7200 if cpu else 172800)
    assert sac.env == ppo.env and sac.env.n_objects == 6 and sac.env.sequential_goals
    assert min(sac.train.total_steps, ppo.train.total_steps) >= 1_000_000  # the clock ends the runs
    assert plan("race-full", cpu=cpu, seeds=[3, 1])[0].seed == 3  # --seeds keeps its order


def test_levers_full_screens_differ_from_the_reference_campaign_by_their_lever_only(tmp_path: Path) -> None:
    """levers-full's CPU runs are compared with fig2-full's 40K campaign (SAC-GLAM+HER, one thread each,
    two at a time): each lever run's config must be that reference's, seed for seed, but for the keys of
    its own overrides, or the screen would measure something else as well."""
    from sac_glam.config import flatten, to_dict

    ref = {s.seed: s for s in plan("fig2-full", cpu=True, results_dir=tmp_path) if s.label == "SAC-GLAM+HER"}
    specs = plan("levers-full", cpu=True, results_dir=tmp_path)
    assert specs and {s.seed for s in specs} == {0, 1}
    for spec in specs:
        lever = load_config(spec.config, [*spec.overrides, f"train.seed={spec.seed}"])
        base = load_config(ref[spec.seed].config, [*ref[spec.seed].overrides, f"train.seed={spec.seed}",
                                                   "train.total_steps=40000", "train.threads=1"])  # fmt: skip
        a, b = flatten(to_dict(lever)), flatten(to_dict(base))
        differ = {k for k in a if a[k] != b[k]}
        own = {o.split("=", 1)[0] for o in dict.fromkeys(spec.overrides)} - {"train.total_steps", "train.eval_every",
                                                                             "train.threads"}  # fmt: skip
        assert own and differ == own, (spec.label, differ, own)
        assert lever.train.total_steps == 40_000 and lever.train.threads == 1


def test_run_local_with_jobs_runs_that_many_at_once_on_one_thread_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--jobs 2: two children alive at a time (never three), each with train.threads=1 and its output in
    launch.log; an explicit train.threads override is kept."""
    children = _fake_popen(monkeypatch, busy_polls=2)
    specs = [_spec(tmp_path, s) for s in range(3)]
    threaded = RunSpec("fig2-cpu", "X", "sac_glam_cpu", ("train.threads=2",), 9, tmp_path / "x" / "seed9")
    assert experiment_runs.run_local([*specs, threaded], jobs=2) == 0
    assert children.peak == 2 and len(children.started) == 4
    for child in children.started[:3]:
        assert child.cmd[-1] == "train.threads=1" and getattr(child.stdout, "name", "").endswith("launch.log")
    last = children.started[3].cmd
    assert last.count("train.threads=2") == 1 and "train.threads=1" not in last


def test_run_local_with_jobs_stops_the_queue_after_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    children = _fake_popen(monkeypatch, code=3)
    assert experiment_runs.run_local([_spec(tmp_path, s) for s in range(4)], jobs=2) == 3
    assert len(children.started) == 2  # the two started together; none after the failure


def test_experiment_refuses_jobs_below_one(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        experiments.main(["fig5", "--cpu", "--jobs", "0", "--dry-run"])
    assert exc.value.code == 2 and "--jobs: 0 is not allowed" in capsys.readouterr().err


def test_ablations_campaign_saves_finished_runs_and_a_new_machine_restores_them(tmp_path: Path) -> None:
    """scripts/ablations.sh --save keeps the records of finished runs (never checkpoints) in
    experiments/campaign/, and --restore puts them back where the runner counts them as done."""
    import shutil
    import subprocess

    root = tmp_path / "clone"
    (root / "scripts").mkdir(parents=True)
    for script in ("ablations.sh", "campaign.sh"):
        shutil.copy(Path(__file__).parents[1] / "scripts" / script, root / "scripts")
    done = root / "results" / "fig9-cpu" / "n1" / "seed0"
    running = root / "results" / "fig9-cpu" / "n1" / "seed1"
    for run in (done, running):
        run.mkdir(parents=True)
        for name in ("metrics.jsonl", "metrics.csv", "config.yaml", "checkpoint.pt"):
            (run / name).write_text(name)
    (done / "result.json").write_text(json.dumps({"steps": 20_000}))
    subprocess.run(["bash", "scripts/ablations.sh", "--save"], cwd=root, check=True, capture_output=True)
    saved = root / "experiments" / "campaign" / "fig9-cpu" / "n1"
    assert sorted(p.name for p in (saved / "seed0").iterdir()) == [
        "config.yaml", "metrics.csv", "metrics.jsonl", "result.json"]  # fmt: skip
    assert not (saved / "seed1").exists()  # unfinished: its checkpoint stays behind
    shutil.rmtree(root / "results")  # a new machine
    subprocess.run(["bash", "scripts/ablations.sh", "--restore"], cwd=root, check=True, capture_output=True)
    assert run_status(done, 20_000) == "done" and not running.exists()


def test_full_env_campaign_keeps_unfinished_runs_checkpoints_until_they_finish(tmp_path: Path) -> None:
    """scripts/full_env.sh --save (CAMPAIGN_CHECKPOINTS=1) keeps an unfinished run's checkpoint, gzip'd,
    with its metrics; a new machine's restore puts it back byte for byte, so the runner resumes the run;
    once the run has finished, --save keeps its records and drops the checkpoint."""
    import shutil
    import subprocess

    root = tmp_path / "clone"
    (root / "scripts").mkdir(parents=True)
    for script in ("full_env.sh", "campaign.sh"):
        shutil.copy(Path(__file__).parents[1] / "scripts" / script, root / "scripts")
    run = root / "results" / "race-full-cpu" / "PPO-GLAM" / "seed0"
    run.mkdir(parents=True)
    blob = bytes(range(256)) * 1000
    (run / "checkpoint.pt").write_bytes(blob)
    for name in ("metrics.jsonl", "config.yaml"):
        (run / name).write_text(name)

    def script(*args: str) -> None:
        subprocess.run(["bash", "scripts/full_env.sh", *args], cwd=root, check=True, capture_output=True)

    script("--save")
    saved = root / "experiments" / "campaign" / "race-full-cpu" / "PPO-GLAM" / "seed0"
    assert sorted(p.name for p in saved.iterdir()) == ["checkpoint.pt.gz", "config.yaml", "metrics.jsonl"]
    shutil.rmtree(root / "results")  # a new machine
    subprocess.run(["bash", "-c", "source scripts/campaign.sh && campaign_restore"], cwd=root, check=True)
    assert (run / "checkpoint.pt").read_bytes() == blob and run_status(run, 10**6, 7200.0) == "resume"
    (run / "result.json").write_text(json.dumps({"steps": 270_000, "wall_s": 7201.0}))
    script("--save")
    assert sorted(p.name for p in saved.iterdir()) == ["config.yaml", "metrics.jsonl", "result.json"]


def test_a_ctrl_c_to_the_runner_checkpoints_its_runs_and_starts_no_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGINT to the runner alone (kill -INT, or a terminal's Ctrl-C) reaches each running child as
    SIGTERM, the checkpointing stop; the runner then starts nothing new and returns 75, not a traceback."""
    import os
    import signal

    monkeypatch.setattr(experiment_runs, "POLL_S", 0.0)
    children: list[Child] = []
    interrupted: list[bool] = []

    class Child:
        def __init__(self, cmd: list[str], **kwargs: object) -> None:
            self.signals: list[int] = []
            children.append(self)

        def send_signal(self, sig: int) -> None:
            self.signals.append(sig)

        def poll(self) -> int | None:
            if len(children) == 2 and not interrupted:
                interrupted.append(True)
                os.kill(os.getpid(), signal.SIGINT)
            return experiment_runs.EXIT_PREEMPTED if self.signals else None

        def wait(self) -> int:
            return experiment_runs.EXIT_PREEMPTED

    monkeypatch.setattr(experiment_runs.subprocess, "Popen", Child)
    assert (
        experiment_runs.run_local([_spec(tmp_path, s) for s in range(4)], jobs=2)
        == experiment_runs.EXIT_PREEMPTED
    )
    assert len(children) == 2 and all(c.signals == [signal.SIGTERM] for c in children)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored after the runner


def test_ablations_seed_steps_name_labels_of_their_study() -> None:
    """scripts/ablations.sh's {study}-seeds steps run `--only` the arms of its CLOSE table: each named
    label must be one of the study's, or that step would stop the campaign when it is reached."""
    import re

    text = (Path(__file__).parents[1] / "scripts" / "ablations.sh").read_text()
    table = dict(re.findall(r'^\s+\[(fig\d+)\]="([^"]+)"', text, flags=re.M))
    assert set(table) == {"fig5", "fig6", "fig8", "fig9"}
    defs = experiment_plan.load_experiments()
    for study, labels in table.items():
        known = {run.label for run in defs[study].runs}
        assert set(labels.split()) <= known, (study, set(labels.split()) - known)
