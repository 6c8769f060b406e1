"""``sac-glam report``: exact numbers from hand-written run logs (2 labels: 3 seeds, 2 seeds of which one
stopped early), the budget lookup rule, the rliable interval estimates, the exported files and the error
messages."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from sac_glam.analysis import intervals, report
from sac_glam.run.logging import read_metrics

N_ENVS = 16  # first record at step 16, as the training loop logs after its first iteration
EVAL_STEPS = [16, 1008, 2000, 3008]  # eval_every=1000 overshot by < n_envs
# label -> seed -> eval/train/success_rate at EVAL_STEPS (A also logs test = train / 2)
EVAL_TRAIN = {
    "A": {0: [0.1, 0.5, 0.8, 0.9], 1: [0.1, 0.3, 0.6, 0.85], 2: [0.0, 0.2, 0.4, 0.7]},  # seed2 never 0.8
    "B": {0: [0.2, 0.6, 0.9, 1.0], 1: [0.0, 0.1, 0.2]},  # seed1 stopped at step 2000
}
ROLLOUT_STEPS = [512, 1008, 1504, 2000, 2496, 3008]
ROLLOUT = [0.0, 1.0, 1.0, 1.0, 1.0, 1.0]  # trailing MA-5: 0, .5, .667, .75, .8, 1


def _write_run(run_dir: Path, label: str, seed: int) -> None:
    run_dir.mkdir(parents=True)
    evals = EVAL_TRAIN[label][seed]
    last = EVAL_STEPS[len(evals) - 1]
    speed = 100.0 + 10 * seed  # env steps per second
    records: list[dict[str, float]] = [{"step": N_ENVS, "time/wall_s": N_ENVS / speed}]
    for step, value in zip(ROLLOUT_STEPS, ROLLOUT, strict=True):
        if step <= last:
            records.append({"step": step, "rollout/success_rate": value, "time/wall_s": step / speed})
    for step, value in zip(EVAL_STEPS, evals, strict=False):
        rec = {"step": step, "eval/train/success_rate": value}
        if label == "A":
            rec["eval/test/success_rate"] = value / 2
        records.append(rec)
    records.sort(key=lambda r: r["step"])
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 9')
    (run_dir / "config.yaml").write_text(f"train:\n  total_steps: 3000\n  seed: {seed}\n")
    (run_dir / "checkpoint.pt").write_bytes(b"\0" * 64)
    (run_dir / "tb").mkdir()
    (run_dir / "tb" / "events.out.tfevents.1").write_bytes(b"\0")
    (run_dir / "final").mkdir()
    (run_dir / "final" / "heads.safetensors").write_bytes(b"\0")


@pytest.fixture
def exp_dir(tmp_path: Path) -> Path:
    root = tmp_path / "fig2-cpu"
    for label, seeds in EVAL_TRAIN.items():
        for seed in seeds:
            _write_run(root / label / f"seed{seed}", label, seed)
    return root


def _pop(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values))


def test_budget_lookup_rule() -> None:
    recs = [{"step": 16.0}, {"step": 16.0, "k": 0.1}, {"step": 1008.0, "k": 0.5}, {"step": 2000.0, "k": 0.8}]
    assert report.step_slack(recs) == 15
    assert report.eval_at_budget(recs, "k", 1000) == (1008, 0.5)  # logged 8 steps after: counts as at 1000
    assert report.eval_at_budget(recs, "k", 1500) == (1008, 0.5)  # the last at or before
    assert report.eval_at_budget(recs, "k", 2000) == (2000, 0.8)
    assert report.eval_at_budget(recs, "k", 992) == (16, 0.1)  # 1008 > 992 + 15
    assert report.eval_at_budget(recs, "k", 2001) is None  # the run stopped before the budget
    assert report.eval_at_budget(recs, "other", 1000) is None


def test_moving_average_and_steps_to_threshold() -> None:
    assert np.allclose(report.moving_average(ROLLOUT, 5), [0.0, 0.5, 2 / 3, 0.75, 0.8, 1.0])
    recs = [{"step": s, "r": v} for s, v in zip(ROLLOUT_STEPS, ROLLOUT, strict=True)]
    assert report.steps_to_threshold(recs, "r", 0.8) == 1008  # raw curve
    assert report.steps_to_threshold(recs, "r", 0.8, window=5) == 2496  # smoothed
    assert report.steps_to_threshold(recs, "r", 0.5, window=5) == 1008  # >= is inclusive
    assert report.steps_to_threshold(recs, "r", 1.01, window=5) is None


def test_numbers(exp_dir: Path) -> None:
    rep = report.build_report(exp_dir, budgets=[1000, 3000], thresholds=[0.5, 0.8], reps=200)
    a, b = rep.labels
    assert (a.label, a.seeds, a.splits) == ("A", [0, 1, 2], ["train", "test"])
    assert (b.label, b.seeds, b.splits) == ("B", [0, 1], ["train"])

    # success at budgets: the evaluation at 1008 stands for 1000, 3008 for 3000
    st = a.at_budget[1000]["train"]
    assert st.values == {0: 0.5, 1: 0.3, 2: 0.2} and a.eval_steps[1000]["train"] == {
        0: 1008,
        1: 1008,
        2: 1008,
    }
    assert (st.mean, st.std) == pytest.approx(_pop([0.5, 0.3, 0.2]))
    assert (a.at_budget[3000]["test"].mean, a.at_budget[3000]["test"].std) == pytest.approx(
        _pop([0.45, 0.425, 0.35])
    )
    assert b.at_budget[3000]["train"].values == {0: 1.0}  # seed1 stopped at 2000: left out
    assert b.unfinished == [1] and a.unfinished == [] and b.final_step == {0: 3008, 1: 2000}

    # steps to a train-success threshold, from evaluations
    r5, r8 = a.to_eval[0.5], a.to_eval[0.8]
    assert r5.steps == {0: 1008, 1: 2000, 2: 3008} and (r5.k, r5.n) == (3, 3)
    assert (r5.reached.mean, r5.reached.std) == pytest.approx(_pop([1008, 2000, 3008]))
    assert r8.steps == {0: 2000, 1: 3008, 2: None} and (r8.k, r8.n) == (2, 3)
    assert (r8.reached.mean, r8.reached.std) == pytest.approx((2504.0, 504.0))
    assert b.to_eval[0.8].steps == {0: 2000, 1: None}
    # ... and from the training episodes, smoothed over 5 records (B seed1 stops before 2496)
    assert a.to_rollout[0.8].steps == {0: 2496, 1: 2496, 2: 2496}
    assert b.to_rollout[0.8].steps == {0: 2496, 1: None} and b.to_rollout[0.5].steps == {0: 1008, 1: 1008}

    # wall time of the last progress record, and env steps / s
    assert a.wall_s.values == pytest.approx({0: 3008 / 100, 1: 3008 / 110, 2: 3008 / 120})
    assert (a.steps_per_s.mean, a.steps_per_s.std) == pytest.approx(_pop([100, 110, 120]))
    assert b.wall_s.values == pytest.approx({0: 3008 / 100, 1: 2000 / 110})
    # wall time until a threshold: the clock at the step it was reached, over the seeds that reached it
    assert a.wall_to_eval[0.8].values == pytest.approx({0: 2000 / 100, 1: 3008 / 110})
    assert a.wall_to_rollout[0.8].values == pytest.approx({0: 24.96, 1: 2496 / 110, 2: 2496 / 120})
    assert b.wall_to_eval[0.8].values == pytest.approx({0: 20.0})
    # ... and its median over every seed, a seed that never got there counting as the latest
    assert a.wall_to_eval_median[0.5] == pytest.approx(2000 / 110)
    assert a.wall_to_eval_median[0.8] == pytest.approx(3008 / 110)  # 20, 27.3 and never: the middle one
    assert b.wall_to_eval_median[0.8] is None  # 20 and never: half never got there


def test_median_all_runs_counts_a_run_that_never_reached_as_the_latest() -> None:
    from sac_glam.analysis.stats import Stat, median_all_runs

    assert median_all_runs(Stat({0: 30.0, 1: 10.0, 2: 20.0}), 3) == 20.0
    assert median_all_runs(Stat({0: 10.0, 1: 20.0}), 3) == 20.0  # not the reached runs' 15
    assert median_all_runs(Stat({0: 10.0, 1: 20.0, 2: 40.0}), 4) == 30.0
    assert median_all_runs(Stat({0: 10.0, 1: 20.0}), 4) is None
    assert median_all_runs(Stat(), 0) is None


def test_wall_at_step_reads_the_last_clock_at_or_before_the_step() -> None:
    recs = [{"step": 32, "time/wall_s": 1.0}, {"step": 512, "time/wall_s": 9.0}, {"step": 600, "k": 0.5},
            {"step": 1024, "time/wall_s": 20.0}]  # fmt: skip
    assert report.wall_at_step(recs, 600) == 9.0  # an evaluation between two progress records
    assert report.wall_at_step(recs, 1024) == 20.0
    assert report.wall_at_step(recs, 16) is None and report.wall_at_step(recs, None) is None


def _tables(md: str) -> list[dict[str, list[str]]]:
    """The markdown tables of a report: label -> its cells (the header row under the key "label")."""
    tables: list[dict[str, list[str]]] = []
    for block in md.split("\n\n"):
        rows = [line.strip("| ").split(" | ") for line in block.splitlines() if line.startswith("| ")]
        if rows:
            tables.append({row[0]: row[1:] for row in rows})
    return tables


def test_markdown_cells(exp_dir: Path) -> None:
    md = report.markdown(
        report.build_report(exp_dir, budgets=[1000, 3000], command="sac-glam report X", reps=200)
    )
    budget, _, _, cost, clock = _tables(md)
    assert budget["label"] == ["seeds", "train goals @ 1,000", "test goals @ 1,000", "train goals @ 3,000",
                               "test goals @ 3,000"]  # fmt: skip
    m, s = _pop([0.5, 0.3, 0.2])
    assert budget["A"][:2] == ["3", f"{m:.2f} ± {s:.2f} (n=3)"]
    assert budget["B"] == ["2", "0.35 ± 0.25 (n=2)", "—", "1.00 ± 0.00 (n=1 of 2)", "—"]
    assert cost["label"] == ["eval train ≥ 0.5", "eval train ≥ 0.8", "training episodes (MA-5) ≥ 0.5",
                             "training episodes (MA-5) ≥ 0.8", "wall time", "env steps/s", "final step"]  # fmt: skip
    m, s = _pop([1008, 2000, 3008])
    assert cost["A"][:2] == [f"{round(m):,} ± {round(s):,} (3/3)", "2,504 ± 504 (2/3)"]
    assert cost["A"][5:] == ["110 ± 8", "3,008 (3/3 ≥ 3,000)"]
    assert cost["B"] == ["1,008 ± 0 (1/2)", "2,000 ± 0 (1/2)", "1,008 ± 0 (2/2)", "2,496 ± 0 (1/2)",
                         f"{(30.08 + 2000 / 110) / 2:.1f} ± {(30.08 - 2000 / 110) / 2:.1f} s", "105 ± 5",
                         "2,000–3,008 (1/2 ≥ 3,000)"]  # fmt: skip
    assert clock["label"] == ["eval train time to ≥ 0.5", "eval train time to ≥ 0.8",
                              "training episodes (MA-5) time to ≥ 0.5", "training episodes (MA-5) time to ≥ 0.8",
                              "eval train time to ≥ 0.5, median of all runs", "eval train time to ≥ 0.8, median of all runs"]  # fmt: skip
    assert clock["A"][4:] == [f"{2000 / 110:.1f} s", f"{3008 / 110:.1f} s"]
    assert clock["B"][4:] == ["not by the budget", "not by the budget"]
    m, s = _pop([20.0, 3008 / 110])
    assert clock["A"][1] == f"{m:.1f} ± {s:.1f} s (2/3)"
    assert clock["B"][:2] == ["10.1 ± 0.0 s (1/2)", "20.0 ± 0.0 s (1/2)"]
    assert "- **unfinished**: B seed1 stopped at step 2,000 < 3,000." in md
    assert md.rstrip().endswith("Made by `sac-glam report X`.")


def test_a_wall_time_column_has_one_unit() -> None:
    # 100 s and 400 s in one column: both in minutes (the largest mean picks), not "100.0 s" beside "6.7 min"
    from sac_glam.analysis.stats import Reach, Stat
    from sac_glam.analysis.tables import _wall_reach_cell, _wall_unit

    fast, slow = Stat({0: 90.0, 1: 110.0}), Stat({0: 400.0})
    unit = _wall_unit([fast, slow, Stat()])
    assert unit == (60.0, "min")
    reach = Reach({0: 1, 1: 2})
    assert _wall_reach_cell(fast, reach, unit) == "1.7 ± 0.2 min (2/2)"
    assert _wall_reach_cell(slow, reach, unit) == "6.7 ± 0.0 min (1/2)"
    assert _wall_unit([Stat({0: 100.0})]) == (1.0, "s") and _wall_unit([Stat({0: 4 * 3600.0})])[1] == "h"


def test_not_reached_cells(exp_dir: Path) -> None:
    path = exp_dir / "B" / "seed0" / "metrics.jsonl"  # B's seed0 now also stops at step 2000
    path.write_text("".join(json.dumps(r) + "\n" for r in read_metrics(path) if r["step"] <= 2000))
    md = report.markdown(report.build_report(exp_dir, budgets=[3000], thresholds=[0.95], reps=200))
    budget, _, _, cost, clock = _tables(md)
    assert budget["B"] == ["2", "no run this long (0/2)", "—"]
    assert clock["B"][:2] == ["not reached (0/2)", "not reached (0/2)"]
    assert cost["A"][:2] == ["not reached (0/3)", "3,008 ± 0 (3/3)"]  # eval; MA-5 is 1.0 at 3008
    assert cost["B"][:2] == ["not reached (0/2)", "not reached (0/2)"]
    assert cost["B"][-1] == "2,000 (0/2 ≥ 3,000)"


def test_default_budgets_from_config(exp_dir: Path, tmp_path: Path) -> None:
    assert report.build_report(exp_dir, reps=200).budgets == [1000, 2000, 3000]  # thirds of train.total_steps
    for cfg in exp_dir.glob("*/seed*/config.yaml"):
        cfg.unlink()
    assert report.build_report(exp_dir, reps=200).budgets == [1003, 2005, 3008]  # thirds of the longest run


def test_main_writes_tables_and_exports(
    exp_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "export"
    assert report.main([str(exp_dir), "--out", str(out), "--budgets", "1000", "3000", "--reps", "200"]) == 0
    printed = capsys.readouterr().out
    assert printed == (out / "table.md").read_text()
    assert f"Made by `sac-glam report {exp_dir} --out {out} --budgets 1000 3000 --reps 200`." in printed
    data = json.loads((out / "table.json").read_text())
    assert data["budgets"] == [1000, 3000] and data["thresholds"] == [0.5, 0.8]
    a = data["labels"][0]
    assert a["steps_to_eval_train_success"]["0.8"] == {
        "mean": 2504.0, "std": 504.0, "reached": 2, "n": 3, "by_seed": {"0": 2000, "1": 3008, "2": None}
    }  # fmt: skip
    assert a["success_at_budget"]["1000"]["train"]["eval_step_by_seed"] == {"0": 1008, "1": 1008, "2": 1008}
    assert data["labels"][1]["unfinished_seeds"] == [1]

    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    runs = [f"{lab}/seed{s}" for lab, seeds in EVAL_TRAIN.items() for s in seeds]
    pngs = [
        f"plots/{stem}.png"
        for stem in ("eval_train_vs_test", "goal_types", "success_vs_steps", "success_vs_time")
    ]
    assert files == sorted([*(f"{r}.csv" for r in runs), *(f"{r}.config.yaml" for r in runs), *pngs,
                            "table.json", "table.md"])  # fmt: skip
    with (out / "A" / "seed2.csv").open() as f:
        rows = list(csv.DictReader(f))
    expected = read_metrics(exp_dir / "A" / "seed2" / "metrics.jsonl")
    assert len(rows) == len(expected) == 1 + 6 + 4  # torn last line skipped
    assert rows[2] == {"step": "512", "time/wall_s": str(512 / 120), "rollout/success_rate": "0.0",
                       "eval/train/success_rate": "", "eval/test/success_rate": ""}  # fmt: skip
    assert (out / "B" / "seed1.config.yaml").read_text() == "train:\n  total_steps: 3000\n  seed: 1\n"


def test_out_defaults_to_experiment_dir_without_exports(
    exp_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert report.main([str(exp_dir), "--budgets", "1000", "--reps", "200"]) == 0
    assert (exp_dir / "table.md").read_text() == capsys.readouterr().out
    assert (exp_dir / "table.json").exists()
    assert not (exp_dir / "plots").exists() and not list(exp_dir.glob("*/seed*.csv"))


def test_one_label_directory_of_seeds(tmp_path: Path) -> None:
    _write_run(tmp_path / "myrun" / "seed0", "A", 0)
    out = tmp_path / "out"
    report.write_report(report.build_report(tmp_path / "myrun", budgets=[3000], reps=200), out)
    assert report.export_runs(tmp_path / "myrun", out)[0] == out / "myrun" / "seed0.csv"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--budgets", "4000"], "budget 4000 is beyond every run of {exp} (the longest ends at step 3008)"),
        (["--budgets", "0"], "budget 0: must be a positive number of environment steps"),
        (["--thresholds", "80"], "threshold 80.0: a success rate must be in [0, 1]"),
        (["--window", "0"], "window 0: must be at least 1 record"),
        (["--reps", "0"], "reps 0: must be at least 1 bootstrap replicate"),
    ],
)
def test_errors_name_the_value(
    exp_dir: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert report.main([str(exp_dir), *args]) == 1
    assert capsys.readouterr().err == f"sac-glam report: {message.format(exp=exp_dir)}\n"
    assert not (exp_dir / "table.md").exists()


def test_errors_missing_or_empty_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert report.main([str(tmp_path / "nope")]) == 1
    assert capsys.readouterr().err == f"sac-glam report: {tmp_path / 'nope'}: no such directory\n"
    (tmp_path / "empty" / "A" / "seed0").mkdir(parents=True)
    assert report.main([str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"sac-glam report: {tmp_path / 'empty'}: no {{label}}/seed*/metrics.jsonl")


# ---------------------------------------------------------------------------------------------------
# Interval estimates (rliable)
# ---------------------------------------------------------------------------------------------------


def test_probability_of_improvement_is_rliables_statistic() -> None:
    from rliable import metrics

    rng = np.random.default_rng(0)
    for n_x, n_y, tasks in ((3, 3, 1), (5, 2, 1), (4, 6, 3)):
        x = rng.integers(0, 5, (n_x, tasks)) / 4  # success rates with many ties
        y = rng.integers(0, 5, (n_y, tasks)) / 4
        assert intervals.probability_of_improvement(x, y) == pytest.approx(
            metrics.probability_of_improvement(x, y)
        )
        # ties count 1/2, so P(X > Y) + P(Y > X) = 1
        assert intervals.probability_of_improvement(x, y) + intervals.probability_of_improvement(y, x) == 1.0


def test_iqm_interval_is_seeded_and_brackets_the_point() -> None:
    import scipy.stats

    scores = [0.2, 0.9, 0.5, 0.55, 0.6, 0.4, 1.0, 0.0]
    np.random.seed(123)
    before = np.random.random()
    np.random.seed(123)
    a = intervals.iqm_interval(scores, reps=500, seed=1)
    assert np.random.random() == before  # the global generator is left as it was
    assert a == intervals.iqm_interval(scores, reps=500, seed=1)  # same seed, same interval
    assert a != intervals.iqm_interval(scores, reps=500, seed=2)
    assert (
        a.point
        == pytest.approx(scipy.stats.trim_mean(scores, 0.25))
        == pytest.approx(np.mean([0.4, 0.5, 0.55, 0.6]))
    )
    assert 0.0 <= a.low < a.point < a.high <= 1.0
    flat = intervals.iqm_interval([0.7, 0.7, 0.7], reps=100)
    assert (flat.point, flat.low, flat.high) == pytest.approx((0.7, 0.7, 0.7))


def test_improvement_interval_separates_only_separated_labels() -> None:
    high, low = [0.9, 0.95, 1.0, 0.92], [0.5, 0.6, 0.55]
    sure = intervals.improvement_interval(high, low, reps=500)
    assert sure == intervals.Interval(1.0, 1.0, 1.0) and sure.excludes(0.5)
    mixed = intervals.improvement_interval([0.5, 0.7, 0.9], [0.6, 0.8, 0.4], reps=500)
    assert mixed.point == pytest.approx(6 / 9) and not mixed.excludes(0.5)  # 1 + 2 + 3 of 9 pairs
    assert mixed.low < 0.5 < mixed.high
    with pytest.raises(ValueError, match="X has 1 tasks and Y 2"):
        intervals.improvement_interval([[0.1], [0.2]], [[0.1, 0.2]])


def test_report_intervals(exp_dir: Path) -> None:
    rep = report.build_report(exp_dir, budgets=[1000, 2000], reps=300)
    a_1000 = rep.iqm[1000]["train"]["A"]
    assert a_1000.point == pytest.approx(np.mean([0.5, 0.3, 0.2]))  # 3 seeds: trims nothing
    assert a_1000.low <= a_1000.point <= a_1000.high
    assert set(rep.iqm[1000]["test"]) == {"A"}  # B logged no test split
    # at the largest budget, 2000: A = 0.8, 0.6, 0.4 against B = 0.9, 0.2 -> 3 of 6 pairs
    poi = rep.improvement["train"][("A", "B")]
    assert poi.point == pytest.approx(0.5) and not poi.excludes(0.5)
    assert rep.improvement["test"] == {}
    _, iqm_table, poi_table, _, _ = _tables(report.markdown(rep))
    assert iqm_table["label"] == ["train goals @ 1,000", "test goals @ 1,000", "train goals @ 2,000",
                                  "test goals @ 2,000"]  # fmt: skip
    assert iqm_table["A"][0] == f"{a_1000.point:.2f} [{a_1000.low:.2f}, {a_1000.high:.2f}]"
    assert iqm_table["B"][1] == "— (n < 2)"
    assert poi_table["A > B"] == [f"0.50 [{poi.low:.2f}, {poi.high:.2f}]", "— (n < 2)"]
    data = rep.to_json()
    assert data["probability_of_improvement"]["budget"] == 2000
    assert data["probability_of_improvement"]["train"]["A > B"] == poi.to_json()
    assert data["bootstrap_reps"] == 300


def test_report_calls_a_difference_significant_only_with_enough_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n_seeds in (3, report.MIN_RUNS_SIGNIFICANT):
        root = tmp_path / f"n{n_seeds}"
        monkeypatch.setitem(EVAL_TRAIN, "HI", {s: [0.1, 0.5, 0.8, 0.9 + s / 100] for s in range(n_seeds)})
        monkeypatch.setitem(EVAL_TRAIN, "LO", {s: [0.1, 0.2, 0.3, 0.4 + s / 100] for s in range(n_seeds)})
        for label in ("HI", "LO"):
            for seed in range(n_seeds):
                _write_run(root / label / f"seed{seed}", label, seed)
        rep = report.build_report(root, budgets=[3000], reps=300)
        assert rep.improvement["train"][("HI", "LO")] == intervals.Interval(1.0, 1.0, 1.0)
        _, _, poi_table, _, _ = _tables(report.markdown(rep))
        called = "**significant**" if n_seeds >= 5 else "(excludes 0.5; < 5 runs: not called)"
        assert poi_table["HI > LO"] == [f"1.00 [1.00, 1.00] {called}"]  # no test goals logged


def test_report_on_a_single_run_and_on_an_export(exp_dir: Path, tmp_path: Path) -> None:
    """``sac-glam report RUN_DIR`` on one run (``train.run_dir=X``), and on the CSVs its ``--out`` exported:
    the same numbers as the report of the experiment directory (issue 37)."""
    assert report.main([str(exp_dir / "A" / "seed0"), "--reps", "50"]) == 0
    single = json.loads((exp_dir / "A" / "seed0" / report.TABLE_JSON).read_text())
    assert single["budgets"] == [1000, 2000, 3000]  # from its config.yaml's total_steps
    export = tmp_path / "export"
    assert report.main([str(exp_dir), "--out", str(export), "--reps", "50"]) == 0
    again = tmp_path / "again"
    assert report.main([str(export), "--out", str(again), "--reps", "50"]) == 0
    a, b = (json.loads((d / report.TABLE_JSON).read_text()) for d in (export, again))
    assert a["labels"] == b["labels"] and a["budgets"] == b["budgets"]
    assert (again / "A" / "seed0.config.yaml").is_file()  # configs travel with the export


def test_without_rliable_the_intervals_say_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """rliable is the ``[report]`` extra (pyproject.toml): training installs without it, and the
    report's intervals then fail with the install hint, not a bare import error."""
    real = intervals.importlib.import_module

    def no_rliable(name: str):
        if name.startswith("rliable"):
            raise ModuleNotFoundError("No module named 'rliable'")
        return real(name)

    monkeypatch.setattr(intervals.importlib, "import_module", no_rliable)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'sac-glam\[report\]'"):
        intervals.iqm_interval([0.1, 0.5, 0.9], reps=10)


def test_peak_is_the_first_best_evaluation_and_last_the_runs_last() -> None:
    from sac_glam.analysis.peaks import Peak, peak_of

    key = "eval/test/success_rate"
    recs = [{"step": s, key: v} for s, v in [(16, 0.1), (1008, 0.4), (2000, 0.4), (3008, 0.2)]]
    recs.append({"step": 4000, "rollout/success_rate": 0.9})  # not an evaluation
    assert peak_of(recs, key) == Peak(value=0.4, step=1008, last=0.2)  # the first of the two 0.4s
    assert peak_of(recs, key).drop == pytest.approx(0.2)
    assert peak_of([*recs, {"step": 5000, key: 0.9}], key) == Peak(value=0.9, step=5000, last=0.9)  # no drop
    assert peak_of(recs, "eval/test/success_rate/grasp") is None  # never logged


def test_report_shows_held_out_goals_falling_after_their_peak_per_goal_type(tmp_path: Path) -> None:
    """Test success on grasp goals peaks at step 1008 and falls by the end on both seeds; grow goals keep
    rising: the table and table.json say which is which, with the steps and per-seed values."""
    root = tmp_path / "full"
    curves = {0: ([0.2, 0.6, 0.3], [0.1, 0.3, 0.5]), 1: ([0.2, 0.4, 0.2], [0.1, 0.2, 0.6])}
    for seed, (grasp, grow) in curves.items():
        recs = [{"step": 16, "time/wall_s": 1.0}]
        for step, g, w in zip([16, 1008, 2000], grasp, grow, strict=True):
            recs.append({"step": step, "eval/train/success_rate": 0.5, "eval/test/success_rate": (g + w) / 2,
                         "eval/test/success_rate/grasp": g, "eval/test/success_rate/grow": w})  # fmt: skip
        (root / "SAC" / f"seed{seed}").mkdir(parents=True)
        (root / "SAC" / f"seed{seed}" / "metrics.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in recs)
        )
    rep = report.build_report(root, [2000], [0.5])
    grasp, grow = rep.labels[0].peaks["test"]["grasp"], rep.labels[0].peaks["test"]["grow"]
    assert grasp.mean_std("value") == pytest.approx((0.5, 0.1))
    assert grasp.mean_std("step") == (1008, 0)
    assert grasp.mean_std("last") == pytest.approx((0.25, 0.05))
    assert grasp.seeds_below_peak == 2 and grow.seeds_below_peak == 0
    assert grow.mean_std("drop") == (0.0, 0.0)
    rows = {(r[0], r[1]): r for r in _table_rows(report.markdown(rep), "Over training")}
    assert rep.labels[0].peaks == report.build_report(root, [1008], [0.5]).labels[0].peaks  # whole runs
    assert rows[("SAC", "test")][3] == "0.50 ± 0.10 @ 1,008 → 0.25 ± 0.05 (2/2 below)"  # grasp
    assert rows[("SAC", "test")][4] == "0.55 ± 0.05 @ 2,000 → 0.55 ± 0.05 (0/2 below)"  # grow
    js = rep.labels[0].to_json()["peak_and_last_by_goal_type"]["test"]["grasp"]
    assert js["by_seed"]["1"] == {"peak": 0.4, "step": 1008, "last": 0.2} and js["seeds_below_peak"] == 2


def _table_rows(md: str, caption: str) -> list[list[str]]:
    """The body rows of the table under the paragraph that starts with ``caption`` (``_tables`` keys rows
    by label, and this table has one row per label and split)."""
    lines = md.splitlines()
    start = (
        next(i for i, line in enumerate(lines) if line.startswith(caption)) + 4
    )  # caption, blank, header, rule
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split(" | ")])
    return rows
