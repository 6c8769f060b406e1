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
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

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


class _LearningPhaseTqdm(tqdm):
    """tqdm whose rate (and so its ETA) is :attr:`learning_rate` once that is set, and whose ETA reads
    ``?`` until then: the bar's ``{eta_text}``."""

    learning_rate: float | None = None

    @property
    def format_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = super().format_dict
        if self.learning_rate is None:
            d["eta_text"] = "?"
        else:
            d["rate"] = self.learning_rate
            d["eta_text"] = self.format_interval((d["total"] - d["n"]) / self.learning_rate)
        return d


class ProgressBar:
    """tqdm over environment steps, with live figures: episodes finished, the success rate of the
    last ``train.log_window`` of them (what ``rollout/success_rate`` logs) and the latest evaluation's
    success per split (``eval/train``, ``eval/test``).

    The figures change when an episode ends, not only at log records (every ``train.log_every``
    steps, i.e. 2,048 steps of the default before the first episode count). They are set with
    ``refresh=False``: tqdm redraws at most every ``mininterval`` seconds, so a step costs one
    comparison, and a step that ends episodes one mean over the window.

    **Rate and ETA are the learning phase's.** The steps before the first update (SAC's
    ``learning_starts``, PPO's first rollout) run several times faster than the rest, so tqdm's own
    estimate promised a 6-second ETA for 62 seconds of work (issue 37). Until the first update the bar
    says ``warm-up`` and its ETA is ``?``; from then on the rate is the mean since the step before that
    update (updates and evaluations included), taken at the latest step, so that a redraw later (the
    final line, after the last evaluation) shows the same rate. The last step is drawn once, by
    :meth:`close`.
    """

    def __init__(self, total: int, initial: int, enabled: bool = True, file: TextIO | None = None,
                 clock: Callable[[], float] = time.perf_counter, learning: bool = False):  # fmt: skip
        """``learning``: the run has updated already (a resumed run): no warm-up to wait for."""
        self._bar = _LearningPhaseTqdm(
            total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True,
            mininterval=1.0, file=file, desc="" if learning else "warm-up",
            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{eta_text}, {rate_fmt}{postfix}]",
        )  # fmt: skip
        self._clock = clock
        self._last = (initial, clock())
        self._since: tuple[int, float] | None = self._last if learning else None
        """(steps, time) of the step before the first update."""
        self._held = 0
        """Steps of the final update, drawn by close() (a draw of its own would make two final lines)."""
        self._episodes = -1
        self._figures: dict[str, str] = {}

    def update(
        self, n_steps: int, episodes: int, recent: Sequence[tuple[str, float, int]], learning: bool = False
    ) -> None:
        """Advance by ``n_steps``; ``recent``: (goal type, success, length) of the latest episodes;
        ``learning``: an update has happened (this step's or an earlier one)."""
        now = self._clock()
        if learning and self._since is None:
            self._since = self._last
            self._bar.set_description_str("", refresh=False)
        self._last = (self._last[0] + n_steps, now)
        if self._since is not None and now > self._since[1]:
            self._bar.learning_rate = (self._last[0] - self._since[0]) / (now - self._since[1])
        if self._last[0] >= self._bar.total:
            self._held += n_steps
        else:
            self._bar.update(n_steps)
        if self._bar.disable or episodes == self._episodes:
            return
        self._episodes = episodes
        self._figures["episodes"] = str(episodes)
        self._figures["success"] = f"{sum(r[1] for r in recent) / len(recent):.2f}" if recent else "-"
        self._bar.set_postfix(self._figures, refresh=False)

    def evaluated(self, metrics: Mapping[str, float]) -> None:
        """Show an evaluation's success per split (``eval/{split}/success_rate`` of ``metrics``)."""
        for key, value in metrics.items():
            split = key.removeprefix("eval/").removesuffix("/success_rate")
            if key == f"eval/{split}/success_rate":
                self._figures[f"eval/{split}"] = f"{value:.2f}"
        self._bar.set_postfix(self._figures, refresh=False)

    @property
    def postfix(self) -> str:
        return str(getattr(self._bar, "postfix", None) or "")

    def __str__(self) -> str:
        return str(self._bar)

    def close(self) -> None:
        self._bar.n += self._held
        self._held = 0
        self._bar.close()
