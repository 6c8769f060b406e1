"""``sac-glam report EXPERIMENT_DIR``: the numbers behind the figures, as a table for the README.

Reads the same ``{label}/seed{seed}/metrics.jsonl`` runs as ``sac-glam plot`` (``plots.load_experiment``)
and reports, per label, over its seeds (mean ± std is the population std, ddof=0, as in the figures):

- **success at a step budget B**: evaluation success on train goals (``eval/train/success_rate``) and on
  held-out test goals (``eval/test/success_rate``). Per run, the value is the *last evaluation at or before
  B*, where an evaluation logged less than one loop iteration (``n_envs`` steps) after B counts as at B:
  the loop evaluates when its step counter first reaches a multiple of ``train.eval_every``, which it
  overshoots by up to ``n_envs - 1`` steps (``n_envs`` is the step of a run's first record). Runs whose
  last step is below B are left out of that budget's mean (``n`` says how many seeds it averages).
- **steps to a threshold** of train success, per seed the first step at which it is reached; mean ± std
  over the seeds that reached it, with ``k/n seeds reached``. Two curves, kept apart: the evaluations
  (``eval/train/success_rate``, sparse: every ``eval_every`` steps) and the training episodes
  (``rollout/success_rate``, itself the success of the last 256 episodes, smoothed by a trailing moving
  average over ``--window`` log records, 5 by default; the first records average the ones available).
- **wall time** of a run: ``time/wall_s`` of its last progress record (training and periodic evaluations;
  not the final evaluation nor saving), and **env steps/s**: that record's step / that wall time.
- **final step** of each run; runs that stop before the largest budget are flagged as unfinished.
- **interval estimates** (``sac_glam/intervals.py``, with ``rliable``): at each budget and split, the
  interquartile mean (IQM) over seeds with its 95% stratified bootstrap confidence interval; at the
  largest budget, the probability of improvement P(X > Y) between every two labels with its interval,
  a difference being called significant when that interval excludes 0.5 and both labels have at least
  ``MIN_RUNS_SIGNIFICANT`` runs there. A label needs 2 runs at the budget for an interval. ``--reps`` bootstrap replicates, ``--ci-seed`` makes them reproducible.

Writes ``table.md`` (markdown, with the command that made it) and ``table.json`` (the same numbers and
the per-seed values) into ``--out`` (default EXPERIMENT_DIR) and prints the markdown. When ``--out`` is
another directory, it also exports what is small enough to commit: ``{out}/{label}/seed{seed}.csv`` (the
logged metrics), ``{out}/{label}/seed{seed}.config.yaml`` and the figures as PNG in ``{out}/plots/``;
never checkpoints, saved models or TensorBoard files.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sac_glam.helptext import plain
from sac_glam.intervals import DEFAULT_REPS, Interval, improvement_table, iqm_interval
from sac_glam.logging import METRICS_FILE, read_metrics, write_csv
from sac_glam.plots import SUCCESS_KEY, WALL_KEY, ExperimentLogs, Records, load_experiment, plot_experiment

EVAL_KEYS = {"train": "eval/train/success_rate", "test": "eval/test/success_rate"}
DEFAULT_THRESHOLDS = (0.5, 0.8)
DEFAULT_WINDOW = 5
#: Runs per label below which no difference is called significant: a percentile bootstrap cannot reach
#: beyond the observed runs, so 3 runs of X all above 3 runs of Y give P(X > Y) = 1 [1, 1], while the
#: exact Mann-Whitney test of that outcome has p = 1/20 one-sided (2 / C(6, 3) = 0.1 two-sided).
MIN_RUNS_SIGNIFICANT = 5
CONFIG_FILE = "config.yaml"
TABLE_MD = "table.md"
TABLE_JSON = "table.json"


# ---------------------------------------------------------------------------------------------------
# Per-run numbers
# ---------------------------------------------------------------------------------------------------


def final_step(records: Records) -> int:
    """The largest step a run logged (its progress when unfinished)."""
    return int(max(r["step"] for r in records))


def step_slack(records: Records) -> int:
    """How far past a budget an evaluation may be logged and still count as at it: ``n_envs - 1`` steps,
    ``n_envs`` being the step of the run's first record (the loop logs after its first iteration)."""
    return max(int(min(r["step"] for r in records)) - 1, 0)


def eval_at_budget(records: Records, key: str, budget: int) -> tuple[int, float] | None:
    """(step, value) of the last evaluation of ``key`` at step <= ``budget + step_slack``; None when the run
    stopped before ``budget`` or logged no such evaluation by then."""
    if final_step(records) < budget:
        return None
    limit = budget + step_slack(records)
    pts = [(int(r["step"]), float(r[key])) for r in records if key in r and np.isfinite(r[key])]
    pts = [p for p in sorted(pts, key=lambda p: p[0]) if p[0] <= limit]
    return pts[-1] if pts else None


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing mean over the last ``window`` values (the first ``window - 1`` average those available)."""
    v = np.asarray(values, dtype=float)
    csum = np.concatenate([[0.0], np.cumsum(v)])
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(idx - window, 0)
    return np.asarray((csum[idx] - csum[lo]) / (idx - lo))


def steps_to_threshold(records: Records, key: str, threshold: float, window: int = 1) -> int | None:
    """First step at which ``key`` (smoothed over ``window`` records when > 1) is >= ``threshold``."""
    pts = sorted(
        ((int(r["step"]), float(r[key])) for r in records if key in r and np.isfinite(r[key])),
        key=lambda p: p[0],
    )
    if not pts:
        return None
    ys = moving_average([p[1] for p in pts], window) if window > 1 else np.array([p[1] for p in pts])
    hits = np.flatnonzero(ys >= threshold)
    return pts[int(hits[0])][0] if len(hits) else None


def wall_time(records: Records) -> tuple[int, float] | None:
    """(step, ``time/wall_s``) of the last progress record; None when none carries the clock."""
    clock = [(int(r["step"]), float(r[WALL_KEY])) for r in records if WALL_KEY in r]
    return max(clock) if clock else None


# ---------------------------------------------------------------------------------------------------
# Aggregation over seeds
# ---------------------------------------------------------------------------------------------------


@dataclass
class Stat:
    """One number over seeds: ``values`` by seed; mean and population std (ddof=0) over them."""

    values: dict[int, float] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.values.values()))) if self.values else float("nan")

    @property
    def std(self) -> float:
        return float(np.std(list(self.values.values()))) if self.values else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {"mean": _num(self.mean), "std": _num(self.std), "n": self.n,
                "by_seed": {str(s): v for s, v in self.values.items()}}  # fmt: skip


@dataclass
class Reach:
    """Steps to a threshold: by seed, the first step at which it was reached (None: never). Mean and
    population std over the ``k`` seeds that reached it, of ``n``."""

    steps: dict[int, int | None] = field(default_factory=dict)

    @property
    def reached(self) -> Stat:
        return Stat({s: float(v) for s, v in self.steps.items() if v is not None})

    @property
    def k(self) -> int:
        return self.reached.n

    @property
    def n(self) -> int:
        return len(self.steps)

    def to_json(self) -> dict[str, Any]:
        r = self.reached
        return {"mean": _num(r.mean), "std": _num(r.std), "reached": self.k, "n": self.n,
                "by_seed": {str(s): v for s, v in self.steps.items()}}  # fmt: skip


@dataclass
class LabelReport:
    """Every number of one label (one curve of the figures)."""

    label: str
    seeds: list[int]
    splits: list[str]
    """Evaluation splits any seed logged (``train``, ``test``)."""
    at_budget: dict[int, dict[str, Stat]]
    """budget -> split -> success over the runs that reached the budget."""
    eval_steps: dict[int, dict[str, dict[int, int]]]
    """budget -> split -> seed -> step of the evaluation used for that budget."""
    to_eval: dict[float, Reach]
    """threshold -> steps until ``eval/train/success_rate`` >= threshold."""
    to_rollout: dict[float, Reach]
    """threshold -> steps until the moving average of ``rollout/success_rate`` >= threshold."""
    wall_s: Stat
    steps_per_s: Stat
    final_step: dict[int, int]
    unfinished: list[int]
    """Seeds whose last step is below the largest budget."""

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "seeds": self.seeds,
            "splits": self.splits,
            "success_at_budget": {
                str(b): {
                    split: {
                        **st.to_json(),
                        "eval_step_by_seed": {str(s): v for s, v in self.eval_steps[b][split].items()},
                    }
                    for split, st in by_split.items()
                }
                for b, by_split in self.at_budget.items()
            },
            "steps_to_eval_train_success": {str(t): r.to_json() for t, r in self.to_eval.items()},
            "steps_to_rollout_success_smoothed": {str(t): r.to_json() for t, r in self.to_rollout.items()},
            "wall_s": self.wall_s.to_json(),
            "env_steps_per_s": self.steps_per_s.to_json(),
            "final_step_by_seed": {str(s): v for s, v in self.final_step.items()},
            "unfinished_seeds": self.unfinished,
        }


def label_report(label: str, seeds: dict[int, Records], budgets: Sequence[int],
                 thresholds: Sequence[float], window: int) -> LabelReport:  # fmt: skip
    """The numbers of one label from its seeds' records (see the module docstring for each)."""
    splits = [s for s, key in EVAL_KEYS.items() if any(key in r for recs in seeds.values() for r in recs)]
    at_budget: dict[int, dict[str, Stat]] = {}
    eval_steps: dict[int, dict[str, dict[int, int]]] = {}
    for b in budgets:
        at_budget[b], eval_steps[b] = {}, {}
        for split in splits:
            found = {s: eval_at_budget(recs, EVAL_KEYS[split], b) for s, recs in seeds.items()}
            hits = {s: v for s, v in found.items() if v is not None}
            at_budget[b][split] = Stat({s: v[1] for s, v in hits.items()})
            eval_steps[b][split] = {s: v[0] for s, v in hits.items()}
    wall = {s: w for s, w in ((s, wall_time(recs)) for s, recs in seeds.items()) if w is not None}
    finals = {s: final_step(recs) for s, recs in seeds.items()}
    return LabelReport(
        label=label,
        seeds=sorted(seeds),
        splits=splits,
        at_budget=at_budget,
        eval_steps=eval_steps,
        to_eval={
            t: Reach({s: steps_to_threshold(r, EVAL_KEYS["train"], t) for s, r in seeds.items()})
            for t in thresholds
        },
        to_rollout={
            t: Reach({s: steps_to_threshold(r, SUCCESS_KEY, t, window) for s, r in seeds.items()})
            for t in thresholds
        },
        wall_s=Stat({s: w[1] for s, w in wall.items()}),
        steps_per_s=Stat({s: w[0] / w[1] for s, w in wall.items() if w[1] > 0}),
        final_step=finals,
        unfinished=[s for s, f in finals.items() if budgets and f < max(budgets)],
    )


@dataclass
class Report:
    """The whole table: one :class:`LabelReport` per label, in the figures' order."""

    name: str
    title: str
    exp_dir: str
    budgets: list[int]
    thresholds: list[float]
    window: int
    labels: list[LabelReport]
    command: str = ""
    iqm: dict[int, dict[str, dict[str, Interval]]] = field(default_factory=dict)
    """budget -> split -> label -> IQM over seeds and its interval (labels with >= 2 runs there)."""
    improvement: dict[str, dict[tuple[str, str], Interval]] = field(default_factory=dict)
    """split -> (X, Y) -> P(X > Y) at the largest budget (X before Y in the figures' order)."""
    reps: int = DEFAULT_REPS

    def to_json(self) -> dict[str, Any]:
        return {
            "experiment": self.name,
            "title": self.title,
            "exp_dir": self.exp_dir,
            "command": self.command,
            "budgets": self.budgets,
            "thresholds": self.thresholds,
            "rollout_window": self.window,
            "std": "population standard deviation over seeds (ddof=0)",
            "budget_rule": "last evaluation at step <= budget + n_envs - 1; runs stopped before the budget are left out",
            "labels": [lab.to_json() for lab in self.labels],
            "intervals": "95% percentile intervals of rliable's stratified bootstrap over seeds",
            "bootstrap_reps": self.reps,
            "iqm": {str(b): {split: {lab: iv.to_json() for lab, iv in by_lab.items()} for split, by_lab in by_split.items()}
                    for b, by_split in self.iqm.items()},
            "probability_of_improvement": {
                "budget": max(self.budgets),
                **{split: {f"{x} > {y}": iv.to_json() for (x, y), iv in pairs.items()}
                   for split, pairs in self.improvement.items()},
            },
        }  # fmt: skip

    def to_markdown(self) -> str:
        return _markdown(self)


def default_budgets(exp_dir: Path, exp: ExperimentLogs) -> list[int]:
    """A third, two thirds and all of the runs' planned ``train.total_steps`` (largest ``config.yaml``),
    e.g. 10000 20000 30000; of the longest run's last step when no ``config.yaml`` says."""
    planned = []
    for run in exp.runs:
        for seed in run.seeds:
            path = run_dir(exp_dir, run.label, seed) / CONFIG_FILE
            if path.exists():
                total = (yaml.safe_load(path.read_text()) or {}).get("train", {}).get("total_steps")
                if isinstance(total, int) and total > 0:
                    planned.append(total)
    total = max(planned) if planned else max(final_step(r) for run in exp.runs for r in run.seeds.values())
    return sorted({round(total * i / 3) for i in (1, 2, 3)})


def build_report(exp_dir: str | Path, budgets: Sequence[int] | None = None,
                 thresholds: Sequence[float] = DEFAULT_THRESHOLDS, window: int = DEFAULT_WINDOW,
                 command: str = "", reps: int = DEFAULT_REPS, ci_seed: int = 0) -> Report:  # fmt: skip
    """Load ``exp_dir`` and compute every number; ValueError / FileNotFoundError name the bad value."""
    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        raise FileNotFoundError(f"{exp_dir}: no such directory")
    exp = load_experiment(exp_dir)
    longest = max(final_step(r) for run in exp.runs for r in run.seeds.values())
    budgets = sorted(set(budgets)) if budgets else default_budgets(exp_dir, exp)
    for b in budgets:
        if b <= 0:
            raise ValueError(f"budget {b}: must be a positive number of environment steps")
        if b > longest:
            raise ValueError(
                f"budget {b} is beyond every run of {exp_dir} (the longest ends at step {longest})"
            )
    for t in thresholds:
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"threshold {t}: a success rate must be in [0, 1]")
    if window < 1:
        raise ValueError(f"window {window}: must be at least 1 record")
    if reps < 1:
        raise ValueError(f"reps {reps}: must be at least 1 bootstrap replicate")
    labels = [label_report(r.label, r.seeds, budgets, thresholds, window) for r in exp.runs]
    rep = Report(exp.name, exp.title, str(exp_dir), list(budgets), list(thresholds), window, labels, command,
                 reps=reps)  # fmt: skip
    for b in budgets:
        rep.iqm[b] = {}
        for split in EVAL_KEYS:
            scores = _scores_at(labels, b, split)
            rep.iqm[b][split] = {lab: iqm_interval(v, reps, ci_seed) for lab, v in scores.items()}
            if b == max(budgets):
                rep.improvement[split] = improvement_table(scores, reps, ci_seed)
    return rep


def _scores_at(labels: Sequence[LabelReport], budget: int, split: str) -> dict[str, list[float]]:
    """label -> success by seed at ``budget`` on ``split``, for the labels with at least 2 such runs."""
    out = {}
    for lab in labels:
        st = lab.at_budget[budget].get(split)
        if st is not None and st.n >= 2:
            out[lab.label] = [st.values[s] for s in sorted(st.values)]
    return out


# ---------------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------------


def _num(x: float) -> float | None:
    return x if np.isfinite(x) else None


def _steps(x: float) -> str:
    return f"{round(x):,}"


def _success_cell(lab: LabelReport, budget: int, split: str) -> str:
    """``0.59 ± 0.03 (n=2)``; ``—`` when the split was not evaluated; ``no run this long (0/2)`` when no
    run got that far (unlike the thresholds' ``not reached``, this is about the runs' length)."""
    if split not in lab.splits:
        return "—"
    st = lab.at_budget[budget][split]
    if st.n == 0:
        return f"no run this long (0/{len(lab.seeds)})"
    of = f" of {len(lab.seeds)}" if st.n < len(lab.seeds) else ""
    return f"{st.mean:.2f} ± {st.std:.2f} (n={st.n}{of})"


def _reach_cell(r: Reach) -> str:
    """``4,096 ± 1,024 (2/3)``: mean ± std over the k seeds that reached it, k/n; ``not reached (0/3)``."""
    if r.k == 0:
        return f"not reached (0/{r.n})"
    st = r.reached
    return f"{_steps(st.mean)} ± {_steps(st.std)} ({r.k}/{r.n})"


def _wall_cell(st: Stat) -> str:
    if st.n == 0:
        return "—"
    scale, unit = (3600.0, "h") if st.mean > 3 * 3600 else (60.0, "min") if st.mean > 3 * 60 else (1.0, "s")
    return f"{st.mean / scale:.1f} ± {st.std / scale:.1f} {unit}"


def _final_cell(lab: LabelReport, budget: int) -> str:
    steps = sorted(lab.final_step.values())
    span = _steps(steps[0]) if steps[0] == steps[-1] else f"{_steps(steps[0])}–{_steps(steps[-1])}"
    done = len(lab.seeds) - len(lab.unfinished)
    return f"{span} ({done}/{len(lab.seeds)} ≥ {_steps(budget)})"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [_row(header), "|" + "|".join(["---"] * len(header)) + "|", *(_row(r) for r in rows)]


def _interval_cell(iv: Interval | None) -> str:
    return "— (n < 2)" if iv is None else f"{iv.point:.2f} [{iv.low:.2f}, {iv.high:.2f}]"


def _interval_tables(rep: Report, splits: Sequence[str]) -> list[str]:
    """The IQM table (every budget) and the probability-of-improvement table (the largest budget)."""
    big = max(rep.budgets)
    header = ["label"] + [f"{s} goals @ {_steps(b)}" for b in rep.budgets for s in splits]
    rows = [[lab.label] + [_interval_cell(rep.iqm[b][s].get(lab.label)) for b in rep.budgets for s in splits]
            for lab in rep.labels]  # fmt: skip
    lines = [f"Interquartile mean (IQM) over seeds [95% stratified bootstrap CI, rliable, {rep.reps:,} "
             "replicates]; with 3 seeds the IQM is the mean:", "", *_table(header, rows), ""]  # fmt: skip
    pairs = [(a.label, b.label) for i, a in enumerate(rep.labels) for b in rep.labels[i + 1 :]]
    if not pairs:
        return lines
    n_runs = {lab.label: {s: st.n for s, st in lab.at_budget[big].items()} for lab in rep.labels}
    rows = []
    for x, y in pairs:
        cells = []
        for s in splits:
            iv = rep.improvement.get(s, {}).get((x, y))
            cell = _interval_cell(iv)
            if iv is not None and iv.excludes(0.5):
                few = min(n_runs[x].get(s, 0), n_runs[y].get(s, 0)) < MIN_RUNS_SIGNIFICANT
                cell += (
                    f" (excludes 0.5; < {MIN_RUNS_SIGNIFICANT} runs: not called)"
                    if few
                    else " **significant**"
                )
            cells.append(cell)
        rows.append([f"{x} > {y}", *cells])
    lines += [f"Probability of improvement P(X > Y) at {_steps(big)} steps [95% CI]: the chance that a run of X "
              "beats a run of Y (ties count 1/2; P(Y > X) = 1 - P(X > Y)); **significant**: the interval "
              f"excludes 0.5 with at least {MIN_RUNS_SIGNIFICANT} runs per label (with fewer, the bootstrap "
              "cannot reach beyond the observed runs):", "", *_table(["X > Y", *(f"{s} goals" for s in splits)], rows), ""]  # fmt: skip
    return lines


def _markdown(rep: Report) -> str:
    splits = [s for s in EVAL_KEYS if any(s in lab.splits for lab in rep.labels)]
    budget_header = ["label", "seeds"] + [f"{s} goals @ {_steps(b)}" for b in rep.budgets for s in splits]
    budget_rows = [[lab.label, str(len(lab.seeds))] + [_success_cell(lab, b, s) for b in rep.budgets for s in splits]
                   for lab in rep.labels]  # fmt: skip
    ma = f"training episodes (MA-{rep.window})"
    cost_header = (["label"] + [f"eval train ≥ {t:g}" for t in rep.thresholds]
                   + [f"{ma} ≥ {t:g}" for t in rep.thresholds] + ["wall time", "env steps/s", "final step"])  # fmt: skip
    big = max(rep.budgets)
    cost_rows = [
        [lab.label]
        + [_reach_cell(lab.to_eval[t]) for t in rep.thresholds]
        + [_reach_cell(lab.to_rollout[t]) for t in rep.thresholds]
        + [
            _wall_cell(lab.wall_s),
            f"{lab.steps_per_s.mean:.0f} ± {lab.steps_per_s.std:.0f}" if lab.steps_per_s.n else "—",
            _final_cell(lab, big),
        ]
        for lab in rep.labels
    ]
    lines = [
        f"**{rep.title}** (`{rep.exp_dir}`)",
        "",
        "Evaluation success rate at fixed step budgets, mean ± std over seeds (population std); "
        "n = seeds whose run reached the budget:",
        "",
        *_table(budget_header, budget_rows),
        "",
        *_interval_tables(rep, splits),
        "Environment steps to reach a train success rate, mean ± std over the seeds that reached it "
        "(k/n seeds); run cost:",
        "",
        *_table(cost_header, cost_rows),
        "",
        "- success @ B: per run, the last evaluation at or before B, an evaluation logged under n_envs steps "
        "after B counting as at B; runs that stopped before B are left out.",
    ]
    if "test" not in splits:
        lines.append("- held-out test goals were not evaluated (no `eval/test/success_rate` logged).")
    elif any("test" not in lab.splits for lab in rep.labels):
        lines.append("- —: this label logged no `eval/test/success_rate`.")
    lines += [
        "- eval train: first evaluation with `eval/train/success_rate` ≥ threshold (sparse: every eval_every steps).",
        f"- {ma}: first log record whose `rollout/success_rate` (success of the last 256 training episodes), "
        f"averaged over the last {rep.window} records, is ≥ threshold.",
        "- wall time: `time/wall_s` of the last progress record (training and periodic evaluations); "
        "env steps/s: its step / wall time.",
    ]  # fmt: skip
    for lab in rep.labels:
        for s in lab.unfinished:
            lines.append(
                f"- **unfinished**: {lab.label} seed{s} stopped at step {_steps(lab.final_step[s])} "
                f"< {_steps(big)}."
            )
    if rep.command:
        lines += ["", f"Made by `{rep.command}`."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------


def run_dir(exp_dir: Path, label: str, seed: int) -> Path:
    """``exp_dir/{label}/seed{seed}``, or ``exp_dir/seed{seed}`` for a one-label directory of seeds."""
    nested = exp_dir / label / f"seed{seed}"
    return nested if (nested / METRICS_FILE).exists() else exp_dir / f"seed{seed}"


def export_runs(exp_dir: str | Path, out: str | Path) -> list[Path]:
    """Copy what is small enough to commit: each run's metrics as ``{out}/{label}/seed{seed}.csv``, its
    ``config.yaml`` as ``seed{seed}.config.yaml``, and the figures as PNG in ``{out}/plots/``."""
    exp_dir, out = Path(exp_dir), Path(out)
    written: list[Path] = []
    for run in load_experiment(exp_dir).runs:
        (out / run.label).mkdir(parents=True, exist_ok=True)
        for seed in run.seeds:
            src = run_dir(exp_dir, run.label, seed)
            csv_path = out / run.label / f"seed{seed}.csv"
            write_csv(read_metrics(src / METRICS_FILE), csv_path)
            written.append(csv_path)
            if (src / CONFIG_FILE).exists():
                cfg_path = out / run.label / f"seed{seed}.{CONFIG_FILE}"
                shutil.copyfile(src / CONFIG_FILE, cfg_path)
                written.append(cfg_path)
    written += plot_experiment(exp_dir, out / "plots", formats=("png",))
    return written


def write_report(rep: Report, out: str | Path) -> list[Path]:
    """``{out}/table.md`` and ``{out}/table.json``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / TABLE_MD).write_text(rep.to_markdown())
    (out / TABLE_JSON).write_text(json.dumps(rep.to_json(), indent=2) + "\n")
    return [out / TABLE_MD, out / TABLE_JSON]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sac-glam report", description=plain(__doc__),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("experiment_dir", help="results/{experiment}[-cpu] (or runs/{name})")
    parser.add_argument("--out", default=None,
                        help="output directory (default EXPERIMENT_DIR); another one also gets CSVs, configs, PNGs")  # fmt: skip
    parser.add_argument("--budgets", type=int, nargs="+", default=None,
                        help="step budgets (default: 1/3, 2/3 and all of train.total_steps, e.g. 10000 20000 30000)")  # fmt: skip
    parser.add_argument("--thresholds", type=float, nargs="+", default=list(DEFAULT_THRESHOLDS),
                        help="train success rates to reach (default 0.5 0.8)")  # fmt: skip
    parser.add_argument("--window", type=int, default=DEFAULT_WINDOW,
                        help=f"moving average over this many rollout records (default {DEFAULT_WINDOW})")  # fmt: skip
    parser.add_argument("--reps", type=int, default=DEFAULT_REPS,
                        help=f"bootstrap replicates per interval (default {DEFAULT_REPS:,})")  # fmt: skip
    parser.add_argument("--ci-seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(args_list)
    exp_dir = Path(args.experiment_dir)
    out = Path(args.out) if args.out is not None else exp_dir
    try:
        rep = build_report(exp_dir, args.budgets, args.thresholds, args.window,
                           command=shlex.join(["sac-glam", "report", *args_list]), reps=args.reps,
                           ci_seed=args.ci_seed)  # fmt: skip
        written = write_report(rep, out)
        if out.resolve() != exp_dir.resolve():
            written += export_runs(exp_dir, out)
    except (FileNotFoundError, ValueError) as err:
        print(f"sac-glam report: {err}", file=sys.stderr)
        return 1
    sys.stdout.write(rep.to_markdown())
    print(f"sac-glam report: wrote {len(written)} files into {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
