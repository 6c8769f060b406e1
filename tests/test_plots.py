"""``sac-glam plot``: every figure from small synthetic run logs (2 labels x 2 seeds), checked through the
matplotlib objects the library returns (axis labels, legend entries, number of curves) and on disk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from sac_glam.analysis import plots

LABELS = ["SAC-GLAM+HER", "PPO-GLAM"]


def _write_run(run_dir: Path, seed: int, her: bool) -> None:
    rng = np.random.default_rng(seed)
    run_dir.mkdir(parents=True)
    lines = []
    for i, step in enumerate(range(0, 1025, 128)):
        rec: dict[str, float] = {"step": step, "rollout/success_rate": min(1.0, step / 1024 + 0.05 * rng.random()),
                                 "time/wall_s": 2.0 * step / 128 + seed, "train/critic_loss": 1.0 / (i + 1)}  # fmt: skip
        if her:
            rec["buffer/her_share"] = 0.5 + 0.3 * step / 1024
        lines.append(rec)
        if step % 512 == 0 and step > 0:
            lines.append(
                {"step": step, "eval/train/success_rate": step / 1024, "eval/test/success_rate": step / 2048}
            )
    (run_dir / "metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in lines) + '{"step": 99'
    )  # torn last line


@pytest.fixture
def exp_dir(tmp_path: Path) -> Path:
    root = tmp_path / "fig2-cpu"
    for label in LABELS:
        for seed in (0, 1):
            _write_run(root / label / f"seed{seed}", seed, her=label.endswith("HER"))
    return root


def _legend_texts(fig: Figure) -> list[list[str]]:
    return [[t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else [] for ax in fig.axes]


def test_mean_std_on_the_common_range() -> None:
    a = (np.array([0.0, 10.0, 20.0]), np.array([0.0, 1.0, 2.0]))
    b = (np.array([0.0, 15.0]), np.array([0.0, 3.0]))
    x, mean, std = plots.mean_std([a, b])
    assert list(x) == [0.0, 10.0, 15.0]  # the docstring's worked example
    assert np.allclose(mean, [0.0, (1.0 + 2.0) / 2, (1.5 + 3.0) / 2])
    assert np.allclose(std, [0.0, 0.5, 0.75])


def test_time_axis_uses_wall_clock_of_progress_records() -> None:
    records = [
        {"step": 0, "time/wall_s": 0.0, "x": 0.0},
        {"step": 100, "time/wall_s": 10.0},
        {"step": 50, "x": 1.0},
    ]
    t, y = plots.seed_curve(records, "x", "time")
    assert list(t) == [0.0, 5.0] and list(y) == [0.0, 1.0]


def test_success_vs_steps_and_time(exp_dir: Path) -> None:
    exp = plots.load_experiment(exp_dir)
    assert [r.label for r in exp.runs] == sorted(LABELS) and exp.seed_counts() == [2, 2]
    for x, xlabel in (("steps", "environment steps"), ("time", "wall-clock time (s)")):
        fig = plots.figure_curves(exp, x=x)  # type: ignore[arg-type]
        [ax] = fig.axes
        assert ax.get_xlabel() == xlabel and "success rate" in ax.get_ylabel()
        assert len(ax.get_lines()) == 2
        assert _legend_texts(fig) == [[f"{lab} (n=2)" for lab in sorted(LABELS)]]
        assert "2 seeds" in fig._suptitle.get_text()  # type: ignore[union-attr]
        assert len(ax.collections) == 2  # one std band per label


def test_train_vs_test_goals(exp_dir: Path) -> None:
    fig = plots.figure_train_vs_test(plots.load_experiment(exp_dir))
    [ax] = fig.axes
    assert ax.get_xlabel() == "environment steps" and ax.get_ylabel() == "evaluation success rate"
    assert len(ax.get_lines()) == 4
    texts = _legend_texts(fig)[0]
    assert "PPO-GLAM: train goals (n=2)" in texts and "PPO-GLAM: test goals (n=2)" in texts
    styles = {line.get_label(): line.get_linestyle() for line in ax.get_lines()}
    assert (
        styles["SAC-GLAM+HER: train goals (n=2)"] == "-" and styles["SAC-GLAM+HER: test goals (n=2)"] == "--"
    )


def test_her_share_only_for_runs_that_logged_it(exp_dir: Path) -> None:
    fig = plots.figure_her_share(plots.load_experiment(exp_dir))
    assert fig is not None
    [ax] = fig.axes
    assert ax.get_ylabel() == "share of HER transitions in the buffer"
    assert _legend_texts(fig) == [["SAC-GLAM+HER (n=2)"]]
    ys = ax.get_lines()[0].get_ydata()
    assert np.isclose(ys[0], 0.5) and np.isclose(ys[-1], 0.8)


def test_goal_types_match_the_grammar() -> None:
    props = plots.goal_type_proportions()
    assert np.isclose(sum(props.values()), 1.0)
    assert props["grow_then_grasp"] + props["grow_then_grow"] > 0.97  # Figure 4: 98% sequential
    fig = plots.figure_goal_types()
    [ax] = fig.axes
    assert ax.get_xlabel() == "goal type" and ax.get_ylabel() == "proportion of goals"
    assert len(ax.patches) == 8  # 4 goal types x (all goals, no sequential goals)
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        "grasp",
        "grow",
        "grow then grasp",
        "grow then grow",
    ]


def test_panels_from_the_manifest(exp_dir: Path) -> None:
    (exp_dir / "experiment.json").write_text(json.dumps({
        "experiment": "fig6-cpu", "title": "Update frequency", "panels": ["PPO", "SAC"],
        "runs": {"PPO-GLAM": {"panels": ["PPO"]}, "SAC-GLAM+HER": {"panels": ["SAC"]}},
    }))  # fmt: skip
    exp = plots.load_experiment(exp_dir)
    assert [r.label for r in exp.runs] == ["PPO-GLAM", "SAC-GLAM+HER"]  # manifest order
    fig = plots.figure_curves(exp)
    assert [ax.get_title() for ax in fig.axes] == ["PPO", "SAC"]
    assert [len(ax.get_lines()) for ax in fig.axes] == [1, 1]
    assert _legend_texts(fig) == [["PPO-GLAM (n=2)"], ["SAC-GLAM+HER (n=2)"]]
    assert fig._suptitle.get_text().startswith("Update frequency")  # type: ignore[union-attr]


def test_a_long_title_is_wrapped_to_the_figure(exp_dir: Path) -> None:
    title = (
        "SAC-GLAM vs PPO-GLAM on the full Playground-Text (Figure 2's environment: N = 6, sequential goals)"
    )
    (exp_dir / "experiment.json").write_text(json.dumps({"experiment": "fig2-full-cpu", "title": title}))
    exp = plots.load_experiment(exp_dir)
    for fig in (plots.figure_curves(exp), plots.figure_train_vs_test(exp)):
        lines = fig._suptitle.get_text().splitlines()  # type: ignore[union-attr]
        width = fig.get_figwidth() * plots.TITLE_CHARS_PER_INCH
        assert len(lines) > 2 and all(len(line) <= width for line in lines)  # the title took two lines
        assert " ".join(lines).startswith(title)


def test_single_label_runs_directory(tmp_path: Path) -> None:
    for seed in (0, 1):
        _write_run(tmp_path / "sac_glam_her_cpu" / f"seed{seed}", seed, her=True)
    exp = plots.load_experiment(tmp_path / "sac_glam_her_cpu")
    assert [r.label for r in exp.runs] == ["sac_glam_her_cpu"] and exp.seed_counts() == [2]


def test_cli_writes_png_and_pdf(exp_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sac_glam.cli import main

    assert main(["plot", str(exp_dir)]) == 0
    for stem in ("success_vs_steps", "success_vs_time", "eval_train_vs_test", "her_share", "goal_types"):
        for fmt in ("png", "pdf"):
            path = exp_dir / "plots" / f"{stem}.{fmt}"
            assert path.exists() and path.stat().st_size > 1000, path
    assert "wrote" in capsys.readouterr().out
    assert main(["plot", str(exp_dir / "nothing-here")]) == 1


def test_plot_reads_a_single_run_directory(tmp_path: Path) -> None:
    """``train.run_dir=X`` holds one run's ``metrics.jsonl`` directly: one label (the config's name) and
    the seed its ``config.yaml`` names (issue 37)."""
    run = tmp_path / "trial"
    _write_run(run, 3, her=True)
    (run / "config.yaml").write_text("name: sac_glam_her_cpu\ntrain:\n  seed: 3\n  total_steps: 1024\n")
    assert plots.main([str(run), "--formats", "png"]) == 0
    exp = plots.load_experiment(run)
    assert [(r.label, list(r.seeds), list(r.configs)) for r in exp.runs] == [("sac_glam_her_cpu", [3], [3])]
    assert (run / "plots" / "success_vs_steps.png").is_file()


def test_plot_reads_the_committed_csv_exports(exp_dir: Path, tmp_path: Path) -> None:
    """``sac-glam report --out`` exports ``{label}/seed{seed}.csv``; plotting the export gives the same
    curves as plotting the runs (the committed ``experiments/results/*`` hold only those files)."""
    from sac_glam.run.logging import read_metrics, write_csv

    export = tmp_path / "export"
    for label in LABELS:
        (export / label).mkdir(parents=True)
        for seed in (0, 1):
            write_csv(
                read_metrics(exp_dir / label / f"seed{seed}" / "metrics.jsonl"),
                export / label / f"seed{seed}.csv",
            )
    runs, exported = plots.load_experiment(exp_dir), plots.load_experiment(export)
    assert [r.label for r in exported.runs] == [r.label for r in runs.runs]
    for a, b in zip(runs.runs, exported.runs, strict=True):
        assert a.seeds == b.seeds  # the CSV round trip is exact, keys a record lacked included
    assert plots.main([str(export), "--out", str(tmp_path / "figs"), "--formats", "png"]) == 0
    assert (tmp_path / "figs" / "eval_train_vs_test.png").is_file()


def test_plot_of_a_directory_without_runs_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert plots.main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "seed*.csv" in err
