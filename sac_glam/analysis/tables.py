"""The markdown of ``sac-glam report`` (``table.md``): a :class:`~sac_glam.analysis.stats.Report` as tables.

Formatting only: each cell (``0.59 ± 0.03 (n=2)``, ``4,096 ± 1,024 (2/3)``, ``0.61 [0.52, 0.70]``), the
success, interval and cost tables, and the notes under them. The numbers come computed in the
:class:`~sac_glam.analysis.stats.Report` (``sac_glam/analysis/stats.py``); this module only reads them
(it computes no statistic), which is why it is separate: changing how a table looks cannot change a
number.
"""

from __future__ import annotations

from collections.abc import Sequence

from sac_glam.analysis.intervals import Interval
from sac_glam.analysis.peaks import ALL, PeakStat
from sac_glam.analysis.stats import EVAL_KEYS, MIN_RUNS_SIGNIFICANT, LabelReport, Reach, Report, Stat
from sac_glam.envs.goals import GOAL_TYPES


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


WallUnit = tuple[float, str]


def _wall_unit(stats: list[Stat]) -> WallUnit:
    """One unit for a whole column (h, min or s, from its largest mean), so that its cells compare at a glance."""
    top = max((st.mean for st in stats if st.n), default=0.0)
    return (3600.0, "h") if top > 3 * 3600 else (60.0, "min") if top > 3 * 60 else (1.0, "s")


def _wall_cell(st: Stat, unit: WallUnit) -> str:
    if st.n == 0:
        return "—"
    scale, name = unit
    return f"{st.mean / scale:.1f} ± {st.std / scale:.1f} {name}"


def _wall_reach_cell(st: Stat, reach: Reach, unit: WallUnit) -> str:
    """``5.2 ± 0.4 min (2/3)``: wall time over the k seeds that reached the threshold, k/n."""
    return f"not reached (0/{reach.n})" if st.n == 0 else f"{_wall_cell(st, unit)} ({st.n}/{reach.n})"


def _median_cell(m: float | None, unit: WallUnit) -> str:
    return "not by the budget" if m is None else f"{m / unit[0]:.1f} {unit[1]}"


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


def _type_table(rep: Report, splits: Sequence[str]) -> list[str]:
    """Success by goal type at the largest budget (split x type columns); nothing when none was logged."""
    cols = [
        (s, t) for s in splits for t in GOAL_TYPES if any(t in lab.by_type.get(s, {}) for lab in rep.labels)
    ]
    if not cols:
        return []
    rows = [[lab.label] + [_stat_cell(lab.by_type.get(s, {}).get(t), len(lab.seeds)) for s, t in cols]
            for lab in rep.labels]  # fmt: skip
    header = ["label"] + [f"{s}: {t.replace('_', ' ')}" for s, t in cols]
    return [f"Evaluation success by goal type at {_steps(max(rep.budgets))} steps, mean ± std over seeds:",
            "", *_table(header, rows), ""]  # fmt: skip


def _peak_cell(ps: PeakStat | None) -> str:
    """``0.37 ± 0.03 @ 85,000 → 0.25 ± 0.05 (3/3 below)``: peak (mean ± std over seeds) at its mean step,
    the last evaluation, and how many seeds ended below their peak."""
    if ps is None or ps.n == 0:
        return "—"
    (peak, peak_sd), (step, _), (last, last_sd) = (ps.mean_std(w) for w in ("value", "step", "last"))
    return f"{peak:.2f} ± {peak_sd:.2f} @ {_steps(step)} → {last:.2f} ± {last_sd:.2f} ({ps.seeds_below_peak}/{ps.n} below)"


def _peak_table(rep: Report, splits: Sequence[str]) -> list[str]:
    """Peak and last evaluation over training, per (label, split) row and goal-type column; nothing when
    no run logged the goal types (the pool's curve alone is the budgets' table)."""
    cols = [t for t in GOAL_TYPES if any(t in lab.peaks.get(s, {}) for lab in rep.labels for s in splits)]
    if not cols:
        return []
    rows = [[lab.label, s] + [_peak_cell(lab.peaks.get(s, {}).get(t)) for t in (ALL, *cols)]
            for lab in rep.labels for s in splits if s in lab.peaks]  # fmt: skip
    header = ["label", "split", "all goals", *(t.replace("_", " ") for t in cols)]
    return ["Over training (each run's evaluations, to its end): the best (mean ± std over seeds, @ its mean "
            "step) → the last, and the seeds whose last is below their best; with 32 episodes per "
            "goal type an evaluation carries about ±0.07 of noise, which biases a peak upwards:",
            "", *_table(header, rows), ""]  # fmt: skip


def _stat_cell(st: Stat | None, n_seeds: int) -> str:
    if st is None or st.n == 0:
        return "—"
    of = f" of {n_seeds}" if st.n < n_seeds else ""
    return f"{st.mean:.2f} ± {st.std:.2f} (n={st.n}{of})"


def markdown(rep: Report) -> str:
    """The whole ``table.md``: success at the budgets, the intervals, the cost table and their notes."""
    splits = [s for s in EVAL_KEYS if any(s in lab.splits for lab in rep.labels)]
    budget_header = ["label", "seeds"] + [f"{s} goals @ {_steps(b)}" for b in rep.budgets for s in splits]
    budget_rows = [[lab.label, str(len(lab.seeds))] + [_success_cell(lab, b, s) for b in rep.budgets for s in splits]
                   for lab in rep.labels]  # fmt: skip
    ma = f"training episodes (MA-{rep.window})"
    cost_header = (["label"] + [f"eval train ≥ {t:g}" for t in rep.thresholds]
                   + [f"{ma} ≥ {t:g}" for t in rep.thresholds] + ["wall time", "env steps/s", "final step"])  # fmt: skip
    big = max(rep.budgets)
    wall_unit = _wall_unit([lab.wall_s for lab in rep.labels])
    cost_rows = [
        [lab.label]
        + [_reach_cell(lab.to_eval[t]) for t in rep.thresholds]
        + [_reach_cell(lab.to_rollout[t]) for t in rep.thresholds]
        + [
            _wall_cell(lab.wall_s, wall_unit),
            f"{lab.steps_per_s.mean:.0f} ± {lab.steps_per_s.std:.0f}" if lab.steps_per_s.n else "—",
            _final_cell(lab, big),
        ]
        for lab in rep.labels
    ]
    clock_header = (["label"] + [c.replace("≥", "time to ≥") for c in cost_header[1 : 1 + 2 * len(rep.thresholds)]]
                    + [f"eval train time to ≥ {t:g}, median of all runs" for t in rep.thresholds])  # fmt: skip
    eval_units = {t: _wall_unit([lab.wall_to_eval[t] for lab in rep.labels]) for t in rep.thresholds}
    rollout_units = {t: _wall_unit([lab.wall_to_rollout[t] for lab in rep.labels]) for t in rep.thresholds}
    clock_rows = [
        [lab.label]
        + [_wall_reach_cell(lab.wall_to_eval[t], lab.to_eval[t], eval_units[t]) for t in rep.thresholds]
        + [
            _wall_reach_cell(lab.wall_to_rollout[t], lab.to_rollout[t], rollout_units[t])
            for t in rep.thresholds
        ]
        + [_median_cell(lab.wall_to_eval_median[t], eval_units[t]) for t in rep.thresholds]
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
        *_type_table(rep, splits),
        *_peak_table(rep, splits),
        *_interval_tables(rep, splits),
        "Environment steps to reach a train success rate, mean ± std over the seeds that reached it "
        "(k/n seeds); run cost:",
        "",
        *_table(cost_header, cost_rows),
        "",
        "Wall time to reach a train success rate, mean ± std over the seeds that reached it (k/n seeds); "
        "comparable between labels only for runs that shared a machine alike:",
        "",
        *_table(clock_header, clock_rows),
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
        "- time to ≥: `time/wall_s` of the last progress record at or before the step the threshold was reached.",
        "- median of all runs: over every seed, a seed that never reached the threshold counting as later than "
        "all that did (so a method is not credited for its luckier seeds alone); \"not by the budget\" when half "
        "or more never reached it.",
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
