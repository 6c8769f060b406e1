"""One metrics logger (SB3's ``logger.py`` in spirit): JSONL + CSV + TensorBoard (+ W&B), namespaced keys.

Keys are namespaced ``rollout/``, ``eval/``, ``train/``, ``buffer/``, ``time/`` (style point 10).
Every record carries ``step`` (environment transitions summed over environments). Files, in the run
directory: ``metrics.jsonl`` (one JSON object per record), ``metrics.csv`` (written at close from the
JSONL, one column per key ever seen), ``tb/`` (TensorBoard events), and with ``train.wandb=true``
``wandb/`` (Weights & Biases, offline by default: the same scalars at the same steps, and the config).
Also here: the terminal progress bar.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

if TYPE_CHECKING:
    from sac_glam.config import Config

METRICS_FILE = "metrics.jsonl"
CSV_FILE = "metrics.csv"
#: The W&B run id of a run directory, kept so that a resumed run continues the same W&B run.
WANDB_ID_FILE = "wandb_id"


class MetricsLogger:
    """Append-only metrics. Resuming a run truncates records past the checkpoint's step, so nothing
    is counted twice."""

    def __init__(
        self,
        run_dir: str | Path,
        *,
        tensorboard: bool = True,
        resume_step: int | None = None,
        wandb_init: dict[str, Any] | None = None,
    ):
        """``wandb_init``: keyword arguments of ``wandb.init`` (see :func:`wandb_init_args`); None: no W&B."""
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / METRICS_FILE
        if resume_step is None:
            self.path.write_text("")
        elif self.path.exists():
            # Records written after the checkpoint describe steps that will be replayed: drop them.
            kept = [r for r in read_metrics(self.path) if r["step"] <= resume_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self._file = self.path.open("a")
        self._tb: Any = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=resume_step)
        self._wandb: Any = None
        if wandb_init is not None:
            try:
                import wandb
            except ImportError:
                from sac_glam.config import WANDB_MISSING

                raise ImportError(WANDB_MISSING) from None
            self._wandb = wandb.init(**wandb_init)

    def log(self, step: int, metrics: Mapping[str, float | int]) -> None:
        record: dict[str, float | int] = {"step": int(step)}
        for key, value in metrics.items():
            v = float(value)
            record[key] = v if math.isfinite(v) else float("nan")
            if self._tb is not None:
                self._tb.add_scalar(key, v, global_step=step)
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._wandb is not None:
            # W&B's own step is ours. Records of one step (progress, then evaluation) join one row.
            # What W&B received between the last checkpoint and an interruption is not retracted on
            # resume (the JSONL and TensorBoard's purge_step drop it); online, W&B drops a step below
            # the last one it has, so the resumed run shows again from the step after it.
            self._wandb.log({k: v for k, v in record.items() if k != "step"}, step=int(step))

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
        write_csv(read_metrics(self.path), self.run_dir / CSV_FILE)


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """Records of a ``metrics.jsonl`` (a torn last line from a killed process is skipped)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def write_csv(records: list[dict[str, float]], path: str | Path) -> None:
    keys: list[str] = []
    for r in records:
        keys += [k for k in r if k not in keys]
    with Path(path).open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(records)


def read_csv(path: str | Path) -> list[dict[str, float]]:
    """Records of a CSV that :func:`write_csv` wrote (an export's ``seed0.csv``): the inverse of it, an
    empty cell being a key the record did not carry."""
    with Path(path).open(newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def series(records: list[dict[str, float]], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of one key, skipping records without it."""
    pts = [(r["step"], r[key]) for r in records if key in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def wandb_mode(configured: str, environ: Mapping[str, str] = os.environ) -> str:
    """``train.wandb_mode`` when set, else ``$WANDB_MODE``, else ``offline`` (works with no network)."""
    return configured or environ.get("WANDB_MODE") or "offline"


def wandb_init_args(cfg: Config, run_dir: Path, resume: bool) -> dict[str, Any]:
    """``wandb.init`` arguments for a run: the full config, files under ``run_dir/wandb/``, and an id
    kept in ``run_dir`` so that resuming the run (same command) continues the same W&B run."""
    import uuid

    from sac_glam.config import to_dict

    id_file = run_dir / WANDB_ID_FILE
    if resume and id_file.exists():
        run_id = id_file.read_text().strip()
    else:
        run_id = uuid.uuid4().hex[:12]
        id_file.write_text(run_id + "\n")
    return {
        "project": cfg.train.wandb_project,
        "name": f"{cfg.name}/seed{cfg.train.seed}",
        "group": cfg.name,
        "config": to_dict(cfg),
        "dir": str(run_dir),
        "mode": wandb_mode(cfg.train.wandb_mode),
        "id": run_id,
        "resume": "allow",
    }


class ProgressBar:
    """tqdm over environment steps, with live figures: episodes finished and the success rate of the
    last ``train.log_window`` of them (what ``rollout/success_rate`` logs).

    The figures change when an episode ends, not only at log records (every ``train.log_every``
    steps, i.e. 2,048 steps of the default before the first episode count). They are set with
    ``refresh=False``: tqdm redraws at most every ``mininterval`` seconds, so a step costs one
    comparison, and a step that ends episodes one mean over the window.
    """

    def __init__(self, total: int, initial: int, enabled: bool = True):
        self._bar = tqdm(total=total, initial=initial, disable=not enabled, unit="step",
                         dynamic_ncols=True, mininterval=1.0)  # fmt: skip
        self._episodes = -1

    def update(self, n_steps: int, episodes: int, recent: Sequence[tuple[str, float, int]]) -> None:
        """Advance by ``n_steps``; ``recent``: (goal type, success, length) of the latest episodes."""
        self._bar.update(n_steps)
        if self._bar.disable or episodes == self._episodes:
            return
        self._episodes = episodes
        success = f"{sum(r[1] for r in recent) / len(recent):.2f}" if recent else "-"
        self._bar.set_postfix(episodes=episodes, success=success, refresh=False)

    @property
    def postfix(self) -> str:
        return str(getattr(self._bar, "postfix", None) or "")

    def close(self) -> None:
        self._bar.close()
