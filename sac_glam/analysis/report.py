"""``sac-glam report EXPERIMENT_DIR``: the numbers behind the figures, as a table for the README.

Reads the same ``{label}/seed{seed}/metrics.jsonl`` runs as ``sac-glam plot`` (``plots.load_experiment``;
also one run's directory, or an export's ``{label}/seed{seed}.csv``) and reports, per label, over its
seeds (mean ± std is the population std, ddof=0, as in the figures):

- **success at a step budget B**: evaluation success on train goals (``eval/train/success_rate``) and on
  held-out test goals (``eval/test/success_rate``). Per run, the value is the *last evaluation at or before
  B*, where an evaluation logged less than one loop iteration (``n_envs`` steps) after B counts as at B:
  the loop evaluates when its step counter first reaches a multiple of ``train.eval_every``, which it
  overshoots by up to ``n_envs - 1`` steps (``n_envs`` is the step of a run's first record). Runs whose
  last step is below B are left out of that budget's mean (``n`` says how many seeds it averages).
- **success by goal type** at the largest budget, on each split (``eval/{split}/success_rate/{goal type}``:
  grasp, grow, grow_then_grasp, grow_then_grow), by the same rule; shown when the runs logged it.
- **over training**, with those goal types: per split and type, each run's best evaluation (value and
  first step) and its last, over all of its evaluations, and how many seeds ended below their best:
  whether held-out goals rise with training or fall after a peak, and the best success a method
  reaches in a race on the clock (``sac_glam/analysis/peaks.py``).
- **steps to a threshold** of train success, per seed the first step at which it is reached; mean ± std
  over the seeds that reached it, with ``k/n seeds reached``. Two curves, kept apart: the evaluations
  (``eval/train/success_rate``, sparse: every ``eval_every`` steps) and the training episodes
  (``rollout/success_rate``, itself the success of the last 256 episodes, smoothed by a trailing moving
  average over ``--window`` log records, 5 by default; the first records average the ones available).
- **wall time** of a run: ``time/wall_s`` of its last progress record (training and periodic evaluations;
  not the final evaluation nor saving), and **env steps/s**: that record's step / that wall time.
- **wall time to a threshold**: for each of the two curves above, ``time/wall_s`` of the last progress
  record at or before the step the threshold was reached (the runs' clocks are comparable only
  when they shared a machine alike, e.g. one campaign's runs two at a time at one thread each).
- **final step** of each run; runs that stop before the largest budget are flagged as unfinished.
- **interval estimates** (``sac_glam/analysis/intervals.py``, with ``rliable``): at each budget and split, the
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

# Where the code lives (kept out of the docstring above, which is the command's --help):
# this module holds the files (table.md / table.json, the exported CSVs, configs and figures) and the
# command line; sac_glam/analysis/stats.py computes the numbers; sac_glam/analysis/tables.py writes the
# markdown. The names of stats.py are re-exported here: callers and tests use ``sac_glam.analysis.report``.

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from sac_glam.analysis.intervals import DEFAULT_REPS
from sac_glam.analysis.plots import load_experiment, plot_experiment
from sac_glam.analysis.stats import (
    CONFIG_FILE,
    DEFAULT_THRESHOLDS,
    DEFAULT_WINDOW,
    EVAL_KEYS,
    MIN_RUNS_SIGNIFICANT,
    LabelReport,
    Reach,
    Report,
    Stat,
    build_report,
    default_budgets,
    eval_at_budget,
    final_step,
    label_report,
    moving_average,
    run_dir,
    step_slack,
    steps_to_threshold,
    wall_at_step,
    wall_time,
)
from sac_glam.analysis.tables import markdown
from sac_glam.helptext import plain
from sac_glam.run.logging import write_csv

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_THRESHOLDS",
    "DEFAULT_WINDOW",
    "EVAL_KEYS",
    "MIN_RUNS_SIGNIFICANT",
    "TABLE_JSON",
    "TABLE_MD",
    "LabelReport",
    "Reach",
    "Report",
    "Stat",
    "build_report",
    "default_budgets",
    "eval_at_budget",
    "export_runs",
    "final_step",
    "label_report",
    "main",
    "moving_average",
    "run_dir",
    "step_slack",
    "steps_to_threshold",
    "wall_at_step",
    "wall_time",
    "write_report",
]

TABLE_MD = "table.md"
TABLE_JSON = "table.json"


# ---------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------


def export_runs(exp_dir: str | Path, out: str | Path) -> list[Path]:
    """Copy what is small enough to commit: each run's metrics as ``{out}/{label}/seed{seed}.csv``, its
    ``config.yaml`` as ``seed{seed}.config.yaml``, and the figures as PNG in ``{out}/plots/``."""
    exp_dir, out = Path(exp_dir), Path(out)
    written: list[Path] = []
    for run in load_experiment(exp_dir).runs:
        (out / run.label).mkdir(parents=True, exist_ok=True)
        for seed, records in run.seeds.items():
            csv_path = out / run.label / f"seed{seed}.csv"
            write_csv(records, csv_path)
            written.append(csv_path)
            if seed in run.configs:
                cfg_path = out / run.label / f"seed{seed}.{CONFIG_FILE}"
                shutil.copyfile(run.configs[seed], cfg_path)
                written.append(cfg_path)
    written += plot_experiment(exp_dir, out / "plots", formats=("png",))
    return written


def write_report(rep: Report, out: str | Path) -> list[Path]:
    """``{out}/table.md`` and ``{out}/table.json``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / TABLE_MD).write_text(markdown(rep))
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
    sys.stdout.write(markdown(rep))
    print(f"sac-glam report: wrote {len(written)} files into {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
