"""``sac-glam experiment``: run the paper's studies (``experiments/experiments.yaml``) as (config, seed) runs.

    sac-glam experiment fig2 --cpu                        # every run of the CPU twin, one after another
    sac-glam experiment fig2-full --cpu                   # the same on the full environment (N = 6, sequential goals)
    sac-glam experiment fig5 --cpu --seeds 0 train.threads=1
    sac-glam experiment fig2 --slurm                      # one sbatch job array per run, seeds as the array
    sac-glam experiment fig8 --dry-run                    # print the plan (and the sbatch lines) only

Every run goes to ``{results_dir}/{experiment}[-cpu]/{label}/seed{seed}``. Re-running skips finished runs
(``result.json`` with ``steps >= train.total_steps``) and resumes unfinished ones (``lamorel-launch``
resumes from the run directory's ``checkpoint.pt``). ``experiment.json`` beside the run directories
records labels, panels and titles for ``sac-glam plot``.

Planning (experiments.yaml, run directories, their status) is :mod:`sac_glam.cli.experiment_plan`; running
the plan, here or as sbatch job arrays, :mod:`sac_glam.cli.experiment_runs`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from sac_glam.cli.experiment_plan import EXPERIMENTS_FILE, budget, load_experiments, plan, write_manifest
from sac_glam.cli.experiment_runs import check_sbatch, default_template, run_local, submit_slurm
from sac_glam.config import ConfigError
from sac_glam.helptext import plain

# ---------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sac-glam experiment", description=plain(__doc__),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument(
        "name",
        nargs="?",
        help="experiment name (fig2, fig2-full, race-full, fig5, ...); --list shows them all",
    )
    parser.add_argument("overrides", nargs="*", help="key=value overrides applied to every run (last wins)")
    parser.add_argument(
        "--cpu", action="store_true", help="the CPU twin: *_cpu configs, a tiny offline model, small budgets"
    )
    parser.add_argument("--seeds", nargs="+", default=None,
                        help="seeds to run (default: the experiment's); key=value items after it are overrides")  # fmt: skip
    parser.add_argument(
        "--results-dir", default="results", help="parent of the experiment's directory (default results)"
    )
    parser.add_argument("--only", nargs="+", default=None, metavar="LABEL",
                        help="run only these labels; key=value items after it are overrides")  # fmt: skip
    parser.add_argument(
        "--slurm", action="store_true", help="submit one sbatch job array per label instead of running"
    )
    parser.add_argument(
        "--template",
        default=None,
        help="sbatch template (default slurm/cpu.sbatch with --cpu, else slurm/v100_single_node.sbatch)",
    )
    parser.add_argument("--sbatch-arg", action="append", default=[], metavar="ARG",
                        help="extra sbatch option, e.g. --sbatch-arg=--partition=gpu (repeatable)")  # fmt: skip
    parser.add_argument("--config-suffix", default="", help="append to every config name, e.g. _lamorel")
    parser.add_argument(
        "--log-to-file", action="store_true", help="local runs: write each run's output to run_dir/launch.log"
    )
    parser.add_argument("--jobs", "-j", type=int, default=1, metavar="N",
                        help="local runs: N at a time, each on one torch thread (train.threads=1 unless set) "
                             "with its output in run_dir/launch.log (default 1)")  # fmt: skip
    parser.add_argument("--dry-run", action="store_true", help="print the plan and the commands; run nothing")
    parser.add_argument("--list", action="store_true", help="list the experiments and exit")
    parser.add_argument(
        "--file", default=None, help=f"experiments file (default experiments/{EXPERIMENTS_FILE})"
    )
    argv = list(sys.argv[1:] if argv is None else argv)
    # key=value overrides may stand anywhere, also after --seeds or --only (whose nargs="+" would take
    # them): they are set apart before argparse. Option values never look like that (labels cannot hold
    # "=", LABEL_RE; options with values starting "--" are written --opt=value and start with "-").
    extra = [a for a in argv if "=" in a and not a.startswith("-")]
    args = parser.parse_intermixed_args([a for a in argv if a not in extra])

    try:
        experiments = load_experiments(args.file)
    except (ConfigError, OSError, ValueError, yaml.YAMLError) as err:
        print(f"sac-glam experiment: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    if args.list or not args.name:
        width = max(map(len, experiments))
        for name, exp in experiments.items():
            print(f"{name:{width}s}  {exp.title}  [{len(exp.runs)} runs x {len(exp.seeds)} seeds; "
                  f"cpu: {len(exp.cpu_seeds)} seeds]")  # fmt: skip
        return 0
    overrides = [*args.overrides, *extra]
    seeds: list[int] | None = None
    if args.seeds is not None:
        try:
            seeds = [int(s) for seed_arg in args.seeds for s in seed_arg.split(",")]
        except ValueError:
            parser.error(f"--seeds takes integers, got {args.seeds}")
    if args.jobs < 1:
        parser.error(f"--jobs: {args.jobs} is not allowed; allowed: an integer >= 1")
    only: list[str] | None = args.only
    try:
        specs = plan(args.name, cpu=args.cpu, seeds=seeds, results_dir=args.results_dir, overrides=overrides,
                     path=args.file, config_suffix=args.config_suffix)  # fmt: skip
    except KeyError as err:
        parser.error(str(err.args[0]))
    if only:
        unknown = set(only) - {s.label for s in specs}
        if unknown:
            parser.error(
                f"--only: unknown labels {sorted(unknown)}; labels: {sorted({s.label for s in specs})}"
            )
        specs = [s for s in specs if s.label in only]
    try:  # fail before the first run if any config or override is wrong, or SLURM cannot be reached
        for spec in {(s.config, s.overrides): s for s in specs}.values():
            budget(spec)
        template = None
        if args.slurm:
            template = Path(args.template) if args.template else default_template(args.cpu)
            if not template.is_file():
                raise ConfigError(f"--template {template}: no such file")
            if not args.dry_run:
                check_sbatch()
    except ConfigError as err:
        print(f"sac-glam experiment: config error: {err}", file=sys.stderr)
        return 2
    if not args.dry_run:
        write_manifest(specs, experiments[args.name])
    exp_dir = specs[0].run_dir.parent.parent
    print(f"experiment {specs[0].experiment}: {len({s.label for s in specs})} labels x seeds "
          f"{sorted({s.seed for s in specs})} -> {exp_dir}", flush=True)  # fmt: skip
    if template is not None:
        try:
            submit_slurm(specs, template=template, sbatch_args=args.sbatch_arg, dry_run=args.dry_run)
        except ConfigError as err:
            print(f"sac-glam experiment: {err}", file=sys.stderr)
            return 1
        return 0
    try:
        rc = run_local(specs, dry_run=args.dry_run, log_to_file=args.log_to_file, jobs=args.jobs)
    except KeyboardInterrupt:
        print(
            "sac-glam experiment: aborted by a second Ctrl-C; runs resume from their last checkpoint",
            file=sys.stderr,
        )
        return 130
    if rc == 0 and not args.dry_run:
        print(f"all runs finished; plot with: sac-glam plot {exp_dir}", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
