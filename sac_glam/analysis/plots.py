"""``sac-glam plot EXPERIMENT_DIR``: the paper's figures from run directories alone.

An experiment directory holds ``{label}/seed{seed}/metrics.jsonl`` (what ``sac-glam experiment`` writes;
``experiment.json`` beside them, when present, gives the labels' order, panels and the title). A
directory of ``seed*/`` runs (``runs/{name}/``) is read as a one-label experiment, a single run's
directory (``train.run_dir=X``, holding ``metrics.jsonl``) as one label with one seed, and the committed
exports of ``sac-glam report --out`` (``{label}/seed{seed}.csv``, e.g. ``experiments/results/fig2-cpu``)
like the runs they were exported from. Figures, each as PNG and PDF in ``EXPERIMENT_DIR/plots/`` (or
``--out``):

- ``success_vs_steps``, ``success_vs_time``: training success rate vs environment steps and vs wall-clock
  time, mean and standard deviation over seeds, one curve per label, one subplot per panel
  (Figure 2; the ablation panels of Figures 5, 6, 8, 9).
- ``eval_train_vs_test``: evaluation success on train goals (solid) beside held-out test goals (dashed).
- ``success_by_goal_type``: evaluation success per goal type (one subplot each: grasp, grow, and the
  sequential grow-then-grasp, grow-then-grow), train goals solid, test goals dashed, when logged.
- ``her_share``: share of HER-relabelled transitions in the replay buffer (Figure 7), when logged.
- ``goal_types``: proportion of each goal type in the train split, from the grammar (Figure 4).

Every library function returns the matplotlib Figure, so tests can inspect axes, lines and legends.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import matplotlib

matplotlib.use("Agg")  # headless: clusters and CI have no display
import matplotlib.pyplot as plt
import numpy as np
import yaml
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from sac_glam.helptext import plain
from sac_glam.run.logging import METRICS_FILE, read_csv, read_metrics

MANIFEST = "experiment.json"
CONFIG_FILE = "config.yaml"
SUCCESS_KEY = "rollout/success_rate"
WALL_KEY = "time/wall_s"
HER_KEY = "buffer/her_share"
SEED_RE = re.compile(r"^seed(\d+)$")
EXPORT_RE = re.compile(r"^seed(\d+)\.csv$")  # sac-glam report --out: {label}/seed{seed}.csv

Records = list[dict[str, float]]


@dataclass
class LabelRuns:
    """The seeds of one curve: ``{seed: metrics records}``."""

    label: str
    panels: tuple[str, ...]
    seeds: dict[int, Records] = field(default_factory=dict)
    configs: dict[int, Path] = field(default_factory=dict)
    """``{seed: its config.yaml}`` (``seed{seed}.config.yaml`` in an export), for the seeds that have one."""


@dataclass
class ExperimentLogs:
    """Every label of an experiment directory, in the manifest's order (then alphabetical)."""

    name: str
    title: str
    panels: tuple[str, ...]
    runs: list[LabelRuns]

    def seed_counts(self) -> list[int]:
        return [len(r.seeds) for r in self.runs]

    def seeds_caption(self) -> str:
        """``mean ± std over 4 seeds`` (or ``2-4 seeds`` when labels differ)."""
        counts = self.seed_counts() or [0]
        lo, hi = min(counts), max(counts)
        n = f"{lo}" if lo == hi else f"{lo}-{hi}"
        return f"mean ± std over {n} seed{'s' if hi != 1 else ''}"


def _read_seeds(label_dir: Path) -> LabelRuns:
    """The seeds below ``label_dir``: ``seed*/metrics.jsonl`` runs, else ``seed*.csv`` exports."""
    out = LabelRuns(label_dir.name, ())
    entries = sorted(label_dir.iterdir()) if label_dir.is_dir() else []
    for d in entries:
        m = SEED_RE.match(d.name)
        if m and (d / METRICS_FILE).exists():
            records = read_metrics(d / METRICS_FILE)
            if records:
                out.seeds[int(m.group(1))] = records
                if (d / CONFIG_FILE).is_file():
                    out.configs[int(m.group(1))] = d / CONFIG_FILE
    for f in entries if not out.seeds else []:
        m = EXPORT_RE.match(f.name)
        records = read_csv(f) if m and f.is_file() else []
        if m and records:
            out.seeds[int(m.group(1))] = records
            if f.with_suffix(f".{CONFIG_FILE}").is_file():
                out.configs[int(m.group(1))] = f.with_suffix(f".{CONFIG_FILE}")
    return out


def _single_run(run_dir: Path) -> LabelRuns | None:
    """A run directory itself (``train.run_dir=X``): one label (the config's name) and its seed."""
    records = read_metrics(run_dir / METRICS_FILE) if (run_dir / METRICS_FILE).is_file() else []
    if not records:
        return None
    config = run_dir / CONFIG_FILE
    raw = yaml.safe_load(config.read_text()) if config.is_file() else None
    raw = raw if isinstance(raw, dict) else {}
    seed = (raw.get("train") or {}).get("seed", 0)
    runs = LabelRuns(str(raw.get("name") or run_dir.resolve().name), ())
    runs.seeds[int(seed)] = records
    if config.is_file():
        runs.configs[int(seed)] = config
    return runs


def load_experiment(exp_dir: str | Path) -> ExperimentLogs:
    """Read every ``{label}/seed*/metrics.jsonl`` (or ``seed*/metrics.jsonl``, or a single run's
    ``metrics.jsonl``, or an export's ``{label}/seed*.csv``) below ``exp_dir``."""
    exp_dir = Path(exp_dir)
    manifest = json.loads((exp_dir / MANIFEST).read_text()) if (exp_dir / MANIFEST).exists() else {}
    panels = tuple(manifest.get("panels") or [""])
    single = _single_run(exp_dir)
    direct = _read_seeds(exp_dir) if single is None else single
    runs: list[LabelRuns] = []
    if direct.seeds:  # runs/{name}/seed{seed}, or one run: one label
        direct.label = direct.label if single is not None else exp_dir.name
        direct.panels = panels[:1]
        runs.append(direct)
    else:
        listed = list(manifest.get("runs", {}))
        read = (
            {d.name: _read_seeds(d) for d in sorted(exp_dir.iterdir()) if d.is_dir()}
            if exp_dir.is_dir()
            else {}
        )
        found = [name for name, r in read.items() if r.seeds]
        for label in [*[x for x in listed if x in found], *[x for x in found if x not in listed]]:
            read[label].panels = tuple(manifest.get("runs", {}).get(label, {}).get("panels") or panels[:1])
            runs.append(read[label])
    if not runs:
        raise FileNotFoundError(
            f"{exp_dir}: no {{label}}/seed*/{METRICS_FILE} found (nor seed*/{METRICS_FILE}, a run's own "
            f"{METRICS_FILE}, or the {{label}}/seed*.csv of an export by sac-glam report --out)"
        )
    name = manifest.get("experiment", runs[0].label if single is not None else exp_dir.name)
    return ExperimentLogs(name=name, title=manifest.get("title", name), panels=panels, runs=runs)


# ---------------------------------------------------------------------------------------------------
# Aggregation over seeds
# ---------------------------------------------------------------------------------------------------


def seed_curve(
    records: Records, key: str, x: Literal["steps", "time"] = "steps"
) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of one key in one run. ``time`` maps each record's step to ``time/wall_s`` by interpolating
    the records that carry it (evaluation records do not)."""
    pts = [(r["step"], r[key]) for r in records if key in r and np.isfinite(r[key])]
    if not pts:
        return np.zeros(0), np.zeros(0)
    steps, ys = (np.asarray(v, dtype=float) for v in zip(*pts, strict=True))
    if x == "steps":
        return steps, ys
    clock = [(r["step"], r[WALL_KEY]) for r in records if WALL_KEY in r]
    if not clock:
        return np.zeros(0), np.zeros(0)
    cs, cw = (np.asarray(v, dtype=float) for v in zip(*sorted(clock), strict=True))
    return np.interp(steps, cs, cw), ys


def mean_std(
    curves: Sequence[tuple[np.ndarray, np.ndarray]], n_points: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and standard deviation of several (x, y) curves on a common grid: the union of their x values
    (or ``n_points`` evenly spaced), restricted to the range every curve covers, each curve linearly
    interpolated. Worked example: x = [0, 10, 20] and [0, 15] -> grid [0, 10, 15]."""
    curves = [(x, y) for x, y in curves if len(x)]
    if not curves:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    lo, hi = max(x.min() for x, _ in curves), min(x.max() for x, _ in curves)
    if n_points is None:
        grid = np.unique(np.concatenate([x for x, _ in curves]))
        grid = grid[(grid >= lo) & (grid <= hi)]
    else:
        grid = np.linspace(lo, hi, n_points)
    ys = np.stack([np.interp(grid, *_sorted(x, y)) for x, y in curves])  # (seeds, grid)
    return grid, ys.mean(axis=0), ys.std(axis=0)


def _sorted(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(x, kind="stable")
    return x[order], y[order]


# ---------------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------------


def _colour(exp: ExperimentLogs, label: str) -> str:
    idx = [r.label for r in exp.runs].index(label)
    return f"C{idx % 10}"


def _panel_axes(exp: ExperimentLogs, width: float = 6.5, height: float = 4.5) -> tuple[Figure, list[Axes]]:
    n = len(exp.panels)
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False, sharey=True)
    return fig, list(axes[0])


def _time_scale(seconds: float) -> tuple[float, str]:
    if seconds > 3 * 3600:
        return 3600.0, "wall-clock time (hours)"
    if seconds > 3 * 60:
        return 60.0, "wall-clock time (minutes)"
    return 1.0, "wall-clock time (s)"


def figure_curves(exp: ExperimentLogs, key: str = SUCCESS_KEY, x: Literal["steps", "time"] = "steps",
                  ylabel: str = "success rate (training episodes)") -> Figure:  # fmt: skip
    """One subplot per panel, one mean curve (± std band) per label of that panel."""
    fig, axes = _panel_axes(exp)
    data = {r.label: mean_std([seed_curve(rec, key, x) for rec in r.seeds.values()], None if x == "steps" else 200)
            for r in exp.runs}  # fmt: skip
    t_max = max((float(d[0].max()) for d in data.values() if len(d[0])), default=0.0)
    scale, xlabel = (1.0, "environment steps") if x == "steps" else _time_scale(t_max)
    for ax, panel in zip(axes, exp.panels, strict=True):
        for run in (r for r in exp.runs if panel in r.panels):
            grid, mean, std = data[run.label]
            if not len(grid):
                continue
            colour = _colour(exp, run.label)
            ax.plot(grid / scale, mean, color=colour, label=f"{run.label} (n={len(run.seeds)})")
            if len(run.seeds) > 1:
                ax.fill_between(grid / scale, mean - std, mean + std, color=colour, alpha=0.2, linewidth=0)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if "success" in key:
            ax.set_ylim(-0.02, 1.02)
        ax.set_title(panel, fontsize=10)
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(loc="best", fontsize=8)
    _suptitle(fig, exp.title, exp.seeds_caption())
    fig.tight_layout()
    return fig


#: Characters of a fontsize-10 title per inch of figure (DejaVu Sans averages ~0.55 em per character).
TITLE_CHARS_PER_INCH = 11


def _suptitle(fig: Figure, *lines: str) -> None:
    """The figure's title, each line wrapped to the figure's width: matplotlib cuts a long experiment title
    (fig2-full's) at the figure's edges instead of wrapping it."""
    width = max(40, int(fig.get_figwidth() * TITLE_CHARS_PER_INCH))
    fig.suptitle("\n".join(textwrap.fill(line, width) for line in lines), fontsize=10)


def figure_train_vs_test(exp: ExperimentLogs) -> Figure:
    """Evaluation success on train goals (solid) and held-out test goals (dashed), per label and panel."""
    fig, axes = _panel_axes(exp)
    for ax, panel in zip(axes, exp.panels, strict=True):
        for run in (r for r in exp.runs if panel in r.panels):
            _plot_train_and_test(ax, exp, run, "eval/{split}/success_rate", " goals")
        ax.set_xlabel("environment steps")
        ax.set_ylabel("evaluation success rate")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(panel, fontsize=10)
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(loc="best", fontsize=7)
    _suptitle(fig, exp.title, f"train goals (solid) vs held-out test goals (dashed); {exp.seeds_caption()}")
    fig.tight_layout()
    return fig


def _plot_train_and_test(ax: Axes, exp: ExperimentLogs, run: LabelRuns, key: str, what: str) -> None:
    """One run's mean +- std over seeds of ``key`` (``{split}`` filled in): train goals solid, test dashed."""
    for split, style in (("train", "-"), ("test", "--")):
        grid, mean, std = mean_std([seed_curve(rec, key.format(split=split)) for rec in run.seeds.values()])
        if not len(grid):
            continue
        colour = _colour(exp, run.label)
        ax.plot(grid, mean, style, color=colour, marker="o", markersize=3,
                label=f"{run.label}: {split}{what} (n={len(run.seeds)})")  # fmt: skip
        if len(run.seeds) > 1:
            ax.fill_between(grid, mean - std, mean + std, color=colour, alpha=0.12, linewidth=0)


def figure_her_share(exp: ExperimentLogs) -> Figure | None:
    """Share of HER transitions in the replay buffer vs steps (Figure 7); None when no run logged it."""
    runs = [r for r in exp.runs if any(HER_KEY in rec for recs in r.seeds.values() for rec in recs)]
    if not runs:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for run in runs:
        grid, mean, std = mean_std([seed_curve(rec, HER_KEY) for rec in run.seeds.values()])
        colour = _colour(exp, run.label)
        ax.plot(grid, mean, color=colour, label=f"{run.label} (n={len(run.seeds)})")
        if len(run.seeds) > 1:
            ax.fill_between(grid, mean - std, mean + std, color=colour, alpha=0.2, linewidth=0)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("share of HER transitions in the buffer")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    ax.set_title(
        f"Relabelled (HER) vs environment transitions (Figure 7)\n{exp.seeds_caption()}", fontsize=10
    )
    fig.tight_layout()
    return fig


def figure_success_by_type(exp: ExperimentLogs) -> Figure | None:
    """Evaluation success per goal type vs steps, train (solid) and test (dashed) goals; None when no run
    logged a per-type evaluation (``eval/{split}/success_rate/{goal type}``)."""
    from sac_glam.envs.goals import GOAL_TYPES

    logged = {k for r in exp.runs for recs in r.seeds.values() for rec in recs for k in rec}
    types = [t for t in GOAL_TYPES if any(f"eval/{s}/success_rate/{t}" in logged for s in ("train", "test"))]
    if not types:
        return None
    fig, axes = plt.subplots(1, len(types), figsize=(4.5 * len(types), 4), squeeze=False, sharey=True)
    for ax, goal_type in zip(axes[0], types, strict=True):
        for run in exp.runs:
            _plot_train_and_test(ax, exp, run, "eval/{split}/success_rate/" + goal_type, "")
        ax.set_xlabel("environment steps")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(goal_type.replace("_", " "), fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("evaluation success rate")
    if axes[0][0].get_lines():
        axes[0][0].legend(loc="best", fontsize=7)
    _suptitle(fig, exp.title,
              f"success by goal type: train goals (solid), test goals (dashed); {exp.seeds_caption()}")  # fmt: skip
    fig.tight_layout()
    return fig


def goal_type_proportions(sequential: bool = True) -> dict[str, float]:
    """Share of each goal type among the train goals of the grammar (Figure 4)."""
    from sac_glam.envs.goals import GOAL_TYPES, goals

    all_goals = goals("train", sequential=sequential)
    return {t: sum(g.goal_type == t for g in all_goals) / len(all_goals) for t in GOAL_TYPES}


def figure_goal_types() -> Figure:
    """Bar chart of the goal types' proportions: all train goals, and without sequential goals."""
    from sac_glam.envs.goals import goals

    groups = {f"all train goals ({len(goals('train')):,})": goal_type_proportions(True),
              f"no sequential goals ({len(goals('train', sequential=False)):,})": goal_type_proportions(False)}  # fmt: skip
    types = list(next(iter(groups.values())))
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(groups)
    for i, (name, props) in enumerate(groups.items()):
        xs = np.arange(len(types)) + (i - (len(groups) - 1) / 2) * width
        bars = ax.bar(xs, [props[t] for t in types], width=width, label=name, color=f"C{i}")
        ax.bar_label(bars, labels=[f"{100 * props[t]:.1f}%" for t in types], fontsize=7)
    ax.set_xticks(np.arange(len(types)), [t.replace("_", " ") for t in types])
    ax.set_xlabel("goal type")
    ax.set_ylabel("proportion of goals")
    ax.set_ylim(0, 1.05)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Goal types of Playground-Text's train split (Figure 4; from the grammar)", fontsize=10)
    fig.tight_layout()
    return fig


def make_figures(exp: ExperimentLogs) -> dict[str, Figure]:
    """Every figure of an experiment, by file stem."""
    figs = {
        "success_vs_steps": figure_curves(exp, x="steps"),
        "success_vs_time": figure_curves(exp, x="time"),
        "eval_train_vs_test": figure_train_vs_test(exp),
        "goal_types": figure_goal_types(),
    }
    by_type = figure_success_by_type(exp)
    if by_type is not None:
        figs["success_by_goal_type"] = by_type
    her = figure_her_share(exp)
    if her is not None:
        figs["her_share"] = her
    return figs


def plot_experiment(exp_dir: str | Path, out_dir: str | Path | None = None,
                    formats: Sequence[str] = ("png", "pdf")) -> list[Path]:  # fmt: skip
    """Write every figure of ``exp_dir`` as ``{out_dir}/{stem}.{format}`` (default ``exp_dir/plots``)."""
    exp = load_experiment(exp_dir)
    out = Path(out_dir) if out_dir is not None else Path(exp_dir) / "plots"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, fig in make_figures(exp).items():
        for fmt in formats:
            path = out / f"{stem}.{fmt}"
            fig.savefig(path, dpi=130)
            written.append(path)
        plt.close(fig)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sac-glam plot", description=plain(__doc__),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("experiment_dir", help="results/{experiment}[-cpu] (or runs/{name})")
    parser.add_argument("--out", default=None, help="output directory (default EXPERIMENT_DIR/plots)")
    parser.add_argument("--formats", nargs="+", default=["png", "pdf"], help="file formats (default png pdf)")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        exp = load_experiment(args.experiment_dir)
    except FileNotFoundError as err:
        print(f"sac-glam plot: {err}", file=sys.stderr)
        return 1
    print(f"{exp.name}: " + ", ".join(f"{r.label} ({len(r.seeds)} seeds)" for r in exp.runs))
    for path in plot_experiment(args.experiment_dir, args.out, args.formats):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
