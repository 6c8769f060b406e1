"""The numbers of ``sac-glam report``: per-run values, their aggregation over seeds, the interval estimates.

What each number means is the module docstring of ``sac_glam/analysis/report.py`` (the command's ``--help``). This
module computes them: per run (:func:`eval_at_budget`, :func:`steps_to_threshold`, :func:`wall_time`), per
label over its seeds (:class:`Stat`, :class:`Reach`, :func:`label_report`) and for the whole experiment
(:func:`build_report`, with the IQM and probability-of-improvement intervals of ``sac_glam/analysis/intervals.py``).
It is separate from the markdown (``sac_glam/analysis/tables.py``) and from the files and the command line
(``sac_glam/analysis/report.py``) because it is the part the tests check against closed forms, and a
:class:`Report` is plain data that both of those only read. ``sac_glam.analysis.report`` re-exports every public
name, so ``from sac_glam.analysis import report; report.build_report(...)`` keeps working.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sac_glam.analysis.intervals import DEFAULT_REPS, Interval, improvement_table, iqm_interval
from sac_glam.analysis.peaks import PeakStat, label_peaks
from sac_glam.analysis.plots import SUCCESS_KEY, WALL_KEY, ExperimentLogs, Records, load_experiment
from sac_glam.envs.goals import GOAL_TYPES
from sac_glam.run.logging import METRICS_FILE

EVAL_KEYS = {"train": "eval/train/success_rate", "test": "eval/test/success_rate"}
DEFAULT_THRESHOLDS = (0.5, 0.8)
DEFAULT_WINDOW = 5
#: Runs per label below which no difference is called significant: a percentile bootstrap cannot reach
#: beyond the observed runs, so 3 runs of X all above 3 runs of Y give P(X > Y) = 1 [1, 1], while the
#: exact Mann-Whitney test of that outcome has p = 1/20 one-sided (2 / C(6, 3) = 0.1 two-sided).
MIN_RUNS_SIGNIFICANT = 5
CONFIG_FILE = "config.yaml"


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


def wall_at_step(records: Records, step: int | None) -> float | None:
    """``time/wall_s`` of the last progress record at step <= ``step``: the run's clock when it got there
    (training and the periodic evaluations before it); None for ``step`` None or no clock by then."""
    if step is None:
        return None
    clock = [(int(r["step"]), float(r[WALL_KEY])) for r in records if WALL_KEY in r and r["step"] <= step]
    return max(clock)[1] if clock else None


def wall_time(records: Records) -> tuple[int, float] | None:
    """(step, ``time/wall_s``) of the last progress record; None when none carries the clock."""
    clock = [(int(r["step"]), float(r[WALL_KEY])) for r in records if WALL_KEY in r]
    return max(clock) if clock else None


# ---------------------------------------------------------------------------------------------------
# Aggregation over seeds
# ---------------------------------------------------------------------------------------------------


def _num(x: float) -> float | None:
    return x if np.isfinite(x) else None


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


def median_all_runs(reached: Stat, n: int) -> float | None:
    """Median over all ``n`` runs of a time to a threshold (``reached``: the runs that got there), a run
    that never did counting as later than every run that did. The mean over the reached runs alone
    favours a method that gets there only on its luckier seeds; this median does not. None when half
    the runs or more never reached it (the median is then "not by the budget")."""
    times = sorted(reached.values.values()) + [float("inf")] * (n - reached.n)
    m = float(np.median(times)) if times else float("inf")
    return m if np.isfinite(m) else None


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
    wall_to_eval: dict[float, Stat]
    """threshold -> wall seconds until the step of ``to_eval`` (:func:`wall_at_step`), seeds that reached it."""
    wall_to_rollout: dict[float, Stat]
    """threshold -> wall seconds until the step of ``to_rollout``."""
    wall_to_eval_median: dict[float, float | None]
    """threshold -> :func:`median_all_runs` of ``wall_to_eval`` over every seed."""
    wall_s: Stat
    steps_per_s: Stat
    final_step: dict[int, int]
    unfinished: list[int]
    """Seeds whose last step is below the largest budget."""
    by_type: dict[str, dict[str, Stat]] = field(default_factory=dict)
    """split -> goal type -> success at the largest budget (``eval/{split}/success_rate/{goal type}``)."""
    peaks: dict[str, dict[str, PeakStat]] = field(default_factory=dict)
    """split -> ``all`` or goal type -> each run's best and last evaluation (``peaks.py``)."""

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
            "wall_s_to_eval_train_success": {str(t): st.to_json() for t, st in self.wall_to_eval.items()},
            "wall_s_to_eval_train_success_median_all_runs": {
                str(t): m for t, m in self.wall_to_eval_median.items()
            },
            "wall_s_to_rollout_success_smoothed": {
                str(t): st.to_json() for t, st in self.wall_to_rollout.items()
            },
            "wall_s": self.wall_s.to_json(),
            "env_steps_per_s": self.steps_per_s.to_json(),
            "final_step_by_seed": {str(s): v for s, v in self.final_step.items()},
            "unfinished_seeds": self.unfinished,
            "success_by_goal_type_at_largest_budget": {
                split: {t: st.to_json() for t, st in by_t.items()} for split, by_t in self.by_type.items()
            },
            "peak_and_last_by_goal_type": {
                split: {t: ps.to_json() for t, ps in by_t.items()} for split, by_t in self.peaks.items()
            },
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
    by_type: dict[str, dict[str, Stat]] = {}
    for split in splits if budgets else []:
        for goal_type in GOAL_TYPES:
            key = f"{EVAL_KEYS[split]}/{goal_type}"
            found = {s: eval_at_budget(recs, key, max(budgets)) for s, recs in seeds.items()}
            if any(v is not None for v in found.values()):
                by_type.setdefault(split, {})[goal_type] = Stat({s: v[1] for s, v in found.items() if v})
    wall = {s: w for s, w in ((s, wall_time(recs)) for s, recs in seeds.items()) if w is not None}
    finals = {s: final_step(recs) for s, recs in seeds.items()}
    to_eval = {t: Reach({s: steps_to_threshold(r, EVAL_KEYS["train"], t) for s, r in seeds.items()})
               for t in thresholds}  # fmt: skip
    to_rollout = {t: Reach({s: steps_to_threshold(r, SUCCESS_KEY, t, window) for s, r in seeds.items()})
                  for t in thresholds}  # fmt: skip

    def walls(reach: Reach) -> Stat:
        found = {s: wall_at_step(seeds[s], step) for s, step in reach.steps.items()}
        return Stat({s: w for s, w in found.items() if w is not None})

    wall_to_eval = {t: walls(r) for t, r in to_eval.items()}
    return LabelReport(
        label=label,
        seeds=sorted(seeds),
        splits=splits,
        at_budget=at_budget,
        eval_steps=eval_steps,
        to_eval=to_eval,
        to_rollout=to_rollout,
        wall_to_eval=wall_to_eval,
        wall_to_rollout={t: walls(r) for t, r in to_rollout.items()},
        wall_to_eval_median={t: median_all_runs(st, len(seeds)) for t, st in wall_to_eval.items()},
        wall_s=Stat({s: w[1] for s, w in wall.items()}),
        steps_per_s=Stat({s: w[0] / w[1] for s, w in wall.items() if w[1] > 0}),
        final_step=finals,
        unfinished=[s for s, f in finals.items() if budgets and f < max(budgets)],
        by_type=by_type,
        peaks=label_peaks(seeds, {s: EVAL_KEYS[s] for s in splits}),
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


def default_budgets(exp_dir: Path, exp: ExperimentLogs) -> list[int]:
    """A third, two thirds and all of the runs' planned ``train.total_steps`` (largest ``config.yaml``),
    e.g. 10000 20000 30000; of the longest run's last step when no ``config.yaml`` says."""
    planned = []
    for run in exp.runs:
        for path in run.configs.values():
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


def run_dir(exp_dir: Path, label: str, seed: int) -> Path:
    """``exp_dir/{label}/seed{seed}``, or ``exp_dir/seed{seed}`` for a one-label directory of seeds."""
    nested = exp_dir / label / f"seed{seed}"
    return nested if (nested / METRICS_FILE).exists() else exp_dir / f"seed{seed}"
