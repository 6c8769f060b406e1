"""Running planned experiment runs: here, ``jobs`` at a time as ``lamorel-launch`` subprocesses that
checkpoint on a forwarded signal, or as one ``sbatch`` job array per label. Finished runs are skipped,
unfinished ones resume (:func:`sac_glam.cli.experiment_plan.run_status`).

This module knows SLURM only as a command line (``sbatch`` with a template from ``slurm/``); what runs
inside the job is the template's business.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from sac_glam.cli.experiment_plan import RunSpec, Status, budgets, run_status
from sac_glam.config import ConfigError, first_existing
from sac_glam.run.signals import StopRequest

EXIT_PREEMPTED = 75  # sac_glam.run.train.EXIT_PREEMPTED; repeated here so that planning does not import torch
POLL_S = 1.0  # how often run_local looks at its running children


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
