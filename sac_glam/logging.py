"""One metrics logger (SB3's ``logger.py`` in spirit): JSONL + CSV + TensorBoard, namespaced keys.

Keys are namespaced ``rollout/``, ``eval/``, ``train/``, ``buffer/``, ``time/`` (style point 10).
Every record carries ``step`` (environment transitions summed over environments). Files, in the run
directory: ``metrics.jsonl`` (one JSON object per record), ``metrics.csv`` (written at close from the
JSONL, one column per key ever seen), ``tb/`` (TensorBoard events).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"
CSV_FILE = "metrics.csv"


class MetricsLogger:
    """Append-only metrics. Resuming a run truncates records past the checkpoint's step, so nothing
    is counted twice."""

    def __init__(self, run_dir: str | Path, *, tensorboard: bool = True, resume_step: int | None = None):
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

    def log(self, step: int, metrics: Mapping[str, float | int]) -> None:
        record: dict[str, float | int] = {"step": int(step)}
        for key, value in metrics.items():
            v = float(value)
            record[key] = v if math.isfinite(v) else float("nan")
            if self._tb is not None:
                self._tb.add_scalar(key, v, global_step=step)
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
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


def series(records: list[dict[str, float]], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of one key, skipping records without it."""
    pts = [(r["step"], r[key]) for r in records if key in r]
    return [p[0] for p in pts], [p[1] for p in pts]
