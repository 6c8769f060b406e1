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

This module knows SLURM only as a command line (``sbatch`` with a template from ``slurm/``); what runs
inside the job is the template's business.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import yaml

from sac_glam.config import ConfigError, first_existing
from sac_glam.helptext import plain
from sac_glam.run.configs import load_config
from sac_glam.run.signals import StopRequest

EXPERIMENTS_FILE = "experiments.yaml"
MANIFEST = "experiment.json"
RESULT_FILE = "result.json"
CHECKPOINT_FILE = "checkpoint.pt"
EXIT_PREEMPTED = 75  # sac_glam.run.train.EXIT_PREEMPTED; repeated here so that planning does not import torch
POLL_S = 1.0  # how often run_local looks at its running children
LABEL_RE = re.compile(r"^[A-Za-z0-9._+-]+$")

Status = Literal["done", "resume", "new"]


@dataclass(frozen=True)
class RunDef:
    """One curve of an experiment (a config and its overrides), before seeds are attached."""

    label: str
    """Directory name under the experiment's results directory, and legend entry."""
    config: str
    cpu_config: str
    overrides: tuple[str, ...] = ()
    cpu_overrides: tuple[str, ...] = ()
    panels: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExperimentDef:
    """A named study: runs x seeds at paper scale, and its CPU twin."""

    name: str
    title: str
    seeds: tuple[int, ...]
    cpu_seeds: tuple[int, ...]
    overrides: tuple[str, ...]
    cpu_overrides: tuple[str, ...]
    panels: tuple[str, ...]
    runs: tuple[RunDef, ...]
    order: Literal["label", "seed"] = "label"
    """The runs' order: label-major (every seed of a label, then the next), or seed-major (every label
    of a seed, then the next), so that ``--jobs`` N runs a seed's N labels side by side under the same
    load: a race on the clock (``race-full``)."""


@dataclass(frozen=True)
class RunSpec:
    """One (config, seed) of an experiment, with its run directory."""

    experiment: str
    """``fig2`` or ``fig2-cpu``: the results subdirectory."""
    label: str
    config: str
    overrides: tuple[str, ...]
    """Experiment, run and command-line overrides, without ``train.seed`` and ``train.run_dir``."""
    seed: int
    run_dir: Path
    panels: tuple[str, ...] = field(default=())

    def launch_args(self) -> list[str]:
        """Arguments of ``lamorel-launch`` for this run."""
        return [
            "--config-name",
            self.config,
            *self.overrides,
            f"train.seed={self.seed}",
            f"train.run_dir={self.run_dir}",
        ]


# ---------------------------------------------------------------------------------------------------
# Definitions
# ---------------------------------------------------------------------------------------------------


def experiments_file() -> Path:
    """``$SAC_GLAM_EXPERIMENTS`` when set, else the package's ``experiments.yaml`` (a wheel's copy, or in a
    clone the link to ``experiments/experiments.yaml``), else the source tree's or the cwd's."""
    env = os.environ.get("SAC_GLAM_EXPERIMENTS")
    here = Path(__file__).resolve().parents[1]  # sac_glam/
    candidates = [Path(env)] if env else []
    candidates += [here / EXPERIMENTS_FILE, here.parent / "experiments" / EXPERIMENTS_FILE,
                   Path.cwd() / "experiments" / EXPERIMENTS_FILE]  # fmt: skip
    return first_existing(candidates, EXPERIMENTS_FILE, "set SAC_GLAM_EXPERIMENTS or pass --file")


def _strs(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where}: expected a list of strings, got {value!r}")
    bad = [v for v in value if "=" not in v]
    if bad and where.endswith("overrides"):
        raise ValueError(f"{where}: overrides must look like key=value, got {bad}")
    return tuple(value)


def _ints(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, int) for v in value):
        raise ValueError(f"{where}: expected a non-empty list of integers, got {value!r}")
    return tuple(value)


def _parse_experiment(name: str, raw: dict[str, Any]) -> ExperimentDef:
    allowed = {"title", "seeds", "overrides", "panels", "runs", "cpu", "order"}
    unknown = set(raw) - allowed
    if unknown:
        raise ValueError(f"experiment {name}: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    cpu = raw.get("cpu") or {}
    panels = _strs(raw.get("panels"), f"{name}.panels") or ("",)
    runs = []
    for i, r in enumerate(raw.get("runs") or []):
        where = f"{name}.runs[{i}]"
        unknown = set(r) - {"label", "config", "cpu_config", "overrides", "cpu_overrides", "panels"}
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
        label = str(r.get("label", ""))
        if not LABEL_RE.match(label):
            raise ValueError(
                f"{where}: label {label!r} must match {LABEL_RE.pattern} (it is a directory name)"
            )
        run_panels = _strs(r.get("panels"), f"{where}.panels") or panels[:1]
        missing = [p for p in run_panels if p not in panels]
        if missing:
            raise ValueError(f"{where}: panels {missing} are not among {name}.panels {list(panels)}")
        runs.append(RunDef(label=label, config=str(r["config"]), cpu_config=str(r.get("cpu_config", f"{r['config']}_cpu")),
                           overrides=_strs(r.get("overrides"), f"{where}.overrides"),
                           cpu_overrides=_strs(r.get("cpu_overrides"), f"{where}.cpu_overrides"), panels=run_panels))  # fmt: skip
    if not runs:
        raise ValueError(f"experiment {name}: no runs")
    labels = [r.label for r in runs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"experiment {name}: duplicate labels in {labels}")
    seeds = _ints(raw.get("seeds", [0]), f"{name}.seeds")
    order = raw.get("order", "label")
    if order not in ("label", "seed"):
        raise ValueError(f"experiment {name}: order {order!r}; allowed: 'label' (the default), 'seed'")
    return ExperimentDef(name=name, title=str(raw.get("title", name)), seeds=seeds,
                         cpu_seeds=_ints(cpu.get("seeds", list(seeds)), f"{name}.cpu.seeds"),
                         overrides=_strs(raw.get("overrides"), f"{name}.overrides"),
                         cpu_overrides=_strs(cpu.get("overrides"), f"{name}.cpu.overrides"),
                         panels=panels, runs=tuple(runs), order=order)  # fmt: skip


def load_experiments(path: str | Path | None = None) -> dict[str, ExperimentDef]:
    """Every experiment of ``experiments.yaml``, validated (labels, panels, override syntax)."""
    raw = yaml.safe_load(Path(path or experiments_file()).read_text())
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of experiment names")
    return {str(name): _parse_experiment(str(name), body) for name, body in raw.items()}


def plan(name: str, *, cpu: bool = False, seeds: Sequence[int] | None = None, results_dir: str | Path = "results",
         overrides: Sequence[str] = (), path: str | Path | None = None, config_suffix: str = "") -> list[RunSpec]:  # fmt: skip
    """The (label, config, seed, run dir) of every run of experiment ``name``, label-major (seed-major
    with the experiment's ``order: seed``).

    Overrides apply in this order (later wins): the experiment's, the CPU twin's (``cpu``), the run's,
    the run's CPU ones, then ``overrides`` from the command line."""
    experiments = load_experiments(path)
    if name not in experiments:
        raise KeyError(f"no experiment {name!r}; available: {', '.join(experiments)}")
    exp = experiments[name]
    exp_name = f"{name}-cpu" if cpu else name
    root = Path(results_dir) / exp_name
    specs = []
    run_seeds = list(exp.cpu_seeds if cpu and seeds is None else (seeds if seeds is not None else exp.seeds))
    for run in exp.runs:
        ovr = merge_overrides(exp.overrides, exp.cpu_overrides if cpu else (), run.overrides,
                              run.cpu_overrides if cpu else (), overrides)  # fmt: skip
        config = (run.cpu_config if cpu else run.config) + config_suffix
        for seed in run_seeds:
            specs.append(RunSpec(exp_name, run.label, config, tuple(ovr), int(seed), root / run.label / f"seed{seed}",
                                 run.panels))  # fmt: skip
    if exp.order == "seed":  # a stable sort: the labels keep their order within a seed
        specs.sort(key=lambda spec: run_seeds.index(spec.seed))
    return specs


def merge_overrides(*groups: Sequence[str]) -> tuple[str, ...]:
    """Concatenate ``key=value`` lists keeping only the last value of each key (at its last position):
    ``[a=1, b=2], [a=3]`` -> ``(b=2, a=3)``."""
    items = [o for g in groups for o in g]
    last = {o.split("=", 1)[0].lstrip("+"): i for i, o in enumerate(items)}
    return tuple(o for i, o in enumerate(items) if last[o.split("=", 1)[0].lstrip("+")] == i)


def budget(spec: RunSpec) -> int:
    """``train.total_steps`` of a run, from its composed config (raises ConfigError if it does not load)."""
    return load_config(spec.config, [*spec.overrides, f"train.seed={spec.seed}"]).train.total_steps


def budgets(spec: RunSpec) -> tuple[int, float]:
    """``train.total_steps`` and ``train.time_limit_s`` (0: none) of a run: :func:`run_status`'s."""
    train = load_config(spec.config, [*spec.overrides, f"train.seed={spec.seed}"]).train
    return train.total_steps, train.time_limit_s


def run_status(run_dir: str | Path, total_steps: int, time_limit_s: float = 0.0) -> Status:
    """``done``: ``result.json`` reports at least ``total_steps``, or a clock (``wall_s``) at least
    ``time_limit_s`` when that is > 0; ``resume``: a checkpoint exists; else ``new``."""
    run_dir = Path(run_dir)
    result = run_dir / RESULT_FILE
    if result.exists():
        try:
            done = json.loads(result.read_text())
            if int(done["steps"]) >= total_steps:
                return "done"
            if time_limit_s > 0 and float(done.get("wall_s") or 0.0) >= time_limit_s:
                return "done"
        except (ValueError, KeyError, TypeError, AttributeError):
            pass  # a torn or foreign result.json: let the run finish and rewrite it
    if (run_dir / CHECKPOINT_FILE).exists() or (run_dir / "checkpoint.prev.pt").exists():
        return "resume"
    return "new"


def write_manifest(specs: Sequence[RunSpec], exp: ExperimentDef) -> Path:
    """``experiment.json``: what ``sac-glam plot`` needs besides the run directories (order, panels, titles)."""
    root = specs[0].run_dir.parent.parent
    root.mkdir(parents=True, exist_ok=True)
    labels: dict[str, dict[str, Any]] = {}
    for s in specs:
        entry = labels.setdefault(
            s.label,
            {"config": s.config, "overrides": list(s.overrides), "panels": list(s.panels), "seeds": []},
        )
        entry["seeds"].append(s.seed)
    path = root / MANIFEST
    previous: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    # Labels and seeds run in earlier invocations (--seeds 0 then --seeds 1, --only A then --only B)
    # stay listed; labels keep the experiment's order.
    runs: dict[str, dict[str, Any]] = dict(previous.get("runs", {}))
    for label, entry in labels.items():
        old = runs.get(label, {}).get("seeds", [])
        runs[label] = {**entry, "seeds": sorted(set(old) | set(entry["seeds"]))}
    order = [r.label for r in exp.runs]
    runs = dict(sorted(runs.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
    manifest = {
        "experiment": specs[0].experiment,
        "title": exp.title,
        "panels": list(exp.panels),
        "runs": runs,
    }
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


# ---------------------------------------------------------------------------------------------------
# Local execution
# ---------------------------------------------------------------------------------------------------


def launch_command(spec: RunSpec) -> list[str]:
    """The subprocess that trains one run: this interpreter's ``lamorel-launch``."""
    return [sys.executable, "-m", "sac_glam.cli.launch", *spec.launch_args()]


class _Forward(StopRequest):
    """Forward SIGTERM/SIGUSR1 to the running children, which checkpoint and exit with 75.

    A first Ctrl-C (SIGINT) reaches them as SIGTERM: the same checkpoint, also when the SIGINT came to
    the runner alone (``kill -INT``); from a terminal the children get the SIGINT too, which is the same
    request. A second Ctrl-C is a KeyboardInterrupt again (the children abort as well)."""

    ctrl_c_message = b"\nCtrl-C: the running runs checkpoint and stop (Ctrl-C again aborts them)\n"

    def __init__(self) -> None:
        super().__init__()
        self.children: list[subprocess.Popen[bytes]] = []

    def stop(self, signum: int) -> None:
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM if signum == signal.SIGINT else signum)


@dataclass
class _Running:
    head: str
    child: subprocess.Popen[bytes]
    log: IO[bytes] | None


def run_command(spec: RunSpec, jobs: int) -> list[str]:
    """``launch_command``, on one torch thread when ``jobs`` > 1 and the overrides do not set
    ``train.threads``: two runs with torch's default (all cores) each starve each other on a small
    machine (a 100x slow-down was seen on 2 cores)."""
    cmd = launch_command(spec)
    if jobs > 1 and not any(o.lstrip("+").startswith("train.threads=") for o in spec.overrides):
        cmd.append("train.threads=1")
    return cmd


def run_local(
    specs: Sequence[RunSpec], *, dry_run: bool = False, log_to_file: bool = False, jobs: int = 1
) -> int:
    """Train every unfinished run, ``jobs`` at a time, in the plan's order. With ``jobs`` > 1 each run's
    output goes to ``run_dir/launch.log`` and each run gets one torch thread (``run_command``).

    Returns 0, or the first failing exit code (75 when a SIGTERM/SIGUSR1 interrupted the runs: re-run the
    same command to resume). After a failure or a signal no new run starts; the running ones finish
    (or checkpoint, on a signal) first."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    n = len(specs)
    todo: list[tuple[str, Status, RunSpec]] = []
    for i, spec in enumerate(specs, 1):
        status = run_status(spec.run_dir, *budgets(spec))
        head = f"[{i}/{n}] {spec.label} seed {spec.seed} ({spec.config}) -> {spec.run_dir}"
        if status == "done":
            print(f"{head}: done, skipped", flush=True)
        elif dry_run:
            print(f"{head}: {'would resume' if status == 'resume' else 'would start'}", flush=True)
            print("  " + " ".join(run_command(spec, jobs)), flush=True)
        else:
            todo.append((head, status, spec))
    rc_first = 0
    running: list[_Running] = []
    with _Forward() as fwd:
        while todo or running:
            while todo and len(running) < jobs and fwd.received is None and rc_first == 0:
                head, status, spec = todo.pop(0)
                print(f"{head}: {'resuming' if status == 'resume' else 'starting'}", flush=True)
                spec.run_dir.mkdir(parents=True, exist_ok=True)
                log = (spec.run_dir / "launch.log").open("ab") if log_to_file or jobs > 1 else None
                child = subprocess.Popen(
                    run_command(spec, jobs), stdout=log, stderr=subprocess.STDOUT if log else None
                )
                fwd.children.append(child)
                running.append(_Running(head, child, log))
            if not running:
                break  # a failure or a signal stopped the queue
            for run in [r for r in running if r.child.poll() is not None]:
                running.remove(run)
                fwd.children.remove(run.child)
                if run.log is not None:
                    run.log.close()
                rc = run.child.wait()
                if rc == EXIT_PREEMPTED or fwd.received is not None:
                    print(f"{run.head}: interrupted (exit {rc}); run the same command to resume", flush=True)
                    rc_first = rc_first or EXIT_PREEMPTED
                elif rc != 0:
                    print(f"{run.head}: FAILED with exit code {rc}", flush=True)
                    rc_first = rc_first or rc
                else:
                    print(f"{run.head}: finished", flush=True)
            if running:
                time.sleep(POLL_S)
    if fwd.received is not None and todo:
        rc_first = rc_first or EXIT_PREEMPTED
    return rc_first


# ---------------------------------------------------------------------------------------------------
# SLURM submission (a command line; the job itself is in slurm/*.sbatch)
# ---------------------------------------------------------------------------------------------------


def default_template(cpu: bool) -> Path:
    """``slurm/cpu.sbatch`` for CPU twins, ``slurm/v100_single_node.sbatch`` otherwise (source tree, then
    cwd); a wheel carries no templates (they are launch scripts, kept outside the package): a one-line
    ConfigError says to pass ``--template``."""
    name = "cpu.sbatch" if cpu else "v100_single_node.sbatch"
    return first_existing([base / "slurm" / name for base in (Path(__file__).resolve().parents[2], Path.cwd())],
                          f"sbatch template slurm/{name}",
                          "pass --template PATH (a clone of the repository has them in slurm/), or run from its root")  # fmt: skip


def check_sbatch() -> None:
    """``--slurm`` submits with ``sbatch``: without it on PATH, one line instead of a traceback, before any
    run directory is created."""
    if shutil.which("sbatch") is None:
        raise ConfigError("--slurm needs sbatch on PATH (a SLURM login node); --dry-run prints the sbatch "
                          "lines, and without --slurm the runs train here")  # fmt: skip


def sbatch_command(
    specs: Sequence[RunSpec], template: str | Path, sbatch_args: Sequence[str] = ()
) -> list[str]:
    """One ``sbatch`` line for the seeds of one label: ``--array`` = the seeds, the template gets the
    config and the overrides; the run directory is ``$SAC_GLAM_RESULTS/$SAC_GLAM_EXPERIMENT/$SAC_GLAM_LABEL/seed$SLURM_ARRAY_TASK_ID``."""
    labels = {(s.experiment, s.label, s.config, s.overrides) for s in specs}
    if len(labels) != 1:
        raise ValueError(f"one sbatch array per label and config; got {sorted(labels)}")
    spec = specs[0]
    results = spec.run_dir.parent.parent.parent.resolve()
    exports = {
        "SAC_GLAM_RESULTS": str(results),
        "SAC_GLAM_EXPERIMENT": spec.experiment,
        "SAC_GLAM_LABEL": spec.label,
    }
    if sys.prefix != sys.base_prefix:  # submitted from a venv: the job activates the same one
        exports["SAC_GLAM_VENV"] = sys.prefix
    bad = [v for v in exports.values() if "," in v]
    if bad:
        raise ValueError(f"sbatch --export cannot carry values with commas: {bad}")
    seeds = ",".join(str(s.seed) for s in sorted(specs, key=lambda s: s.seed))
    log = results / spec.experiment / spec.label / "seed%a" / "slurm-%A_%a.out"
    return ["sbatch", "--parsable", f"--job-name={spec.experiment}.{spec.label}", f"--array={seeds}",
            f"--output={log}", "--export=ALL," + ",".join(f"{k}={v}" for k, v in exports.items()),
            *sbatch_args, str(template), spec.config, *spec.overrides]  # fmt: skip


def submit_slurm(specs: Sequence[RunSpec], *, template: str | Path, sbatch_args: Sequence[str] = (),
                 dry_run: bool = False) -> list[str]:  # fmt: skip
    """Submit one job array per label with the unfinished seeds; returns the job ids (dry run: none)."""
    groups: dict[str, list[RunSpec]] = {}
    for spec in specs:
        status = run_status(spec.run_dir, *budgets(spec))
        head = f"{spec.label} seed {spec.seed} ({spec.config}) -> {spec.run_dir}"
        if status == "done":
            print(f"{head}: done, skipped", flush=True)
            continue
        print(f"{head}: {'to resume' if status == 'resume' else 'to start'}", flush=True)
        groups.setdefault(spec.label, []).append(spec)
    job_ids = []
    for group in groups.values():
        cmd = sbatch_command(group, template, sbatch_args)
        print("  " + " ".join(cmd), flush=True)
        if dry_run:
            continue
        made = [d for s in group for d in (s.run_dir, s.run_dir.parent) if not d.exists()]
        for s in group:  # sbatch does not create the --output directory
            s.run_dir.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            for d in made:  # leave no empty run directory behind
                with contextlib.suppress(OSError):
                    d.rmdir()
            why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
            raise ConfigError(f"sbatch refused the job array of {group[0].label}: {why}")
        out = done.stdout.strip()
        job_id = out.split(";")[0]
        print(f"  submitted job array {job_id}", flush=True)
        job_ids.append(job_id)
    return job_ids


# ---------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sac-glam experiment", description=plain(__doc__),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument(
        "name", nargs="?", help="experiment name (fig2, fig2-full, fig5, fig6, fig8, fig9); --list shows them"
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
        for name, exp in experiments.items():
            print(
                f"{name:8s} {exp.title}  [{len(exp.runs)} runs x {len(exp.seeds)} seeds; cpu: {len(exp.cpu_seeds)} seeds]"
            )
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
