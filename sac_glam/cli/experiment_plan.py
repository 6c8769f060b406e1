"""The paper's studies as runs: ``experiments/experiments.yaml`` read and validated, each experiment
planned as (label, config, seed, run directory) specs, and a run directory's status (done, to resume,
new). Nothing here starts a run (:mod:`sac_glam.cli.experiment_runs` does) or imports torch.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from sac_glam.config import first_existing
from sac_glam.run.configs import load_config

EXPERIMENTS_FILE = "experiments.yaml"
MANIFEST = "experiment.json"
RESULT_FILE = "result.json"
CHECKPOINT_FILE = "checkpoint.pt"
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
