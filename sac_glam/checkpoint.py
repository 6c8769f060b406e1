"""Checkpoints: one manifest with everything needed to continue exactly (style point 11).

``checkpoint.pt`` is written as ``checkpoint.pt.tmp`` and renamed, so it is never half-written; the
previous good one is kept as ``checkpoint.prev.pt`` until the new one is complete. A file that fails
to load (truncated, corrupt) is reported and the previous one is used.
"""

from __future__ import annotations

import logging
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"


def save_checkpoint(run_dir: str | Path, state: dict[str, Any]) -> Path:
    """Atomically write ``state`` to ``run_dir/checkpoint.pt``, keeping the last good one as ``.prev``."""
    run_dir = Path(run_dir)
    path, prev, tmp = run_dir / CHECKPOINT, run_dir / PREVIOUS, run_dir / (CHECKPOINT + ".tmp")
    with tmp.open("wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    if path.exists():
        os.replace(path, prev)
    os.replace(tmp, path)
    return path


def load_checkpoint(run_dir: str | Path) -> dict[str, Any] | None:
    """The newest loadable checkpoint of a run directory, or None when there is none."""
    run_dir = Path(run_dir)
    for name in (CHECKPOINT, PREVIOUS):
        path = run_dir / name
        if not path.exists():
            continue
        try:
            state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
            return state
        except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError) as err:
            log.warning("checkpoint %s cannot be read (%s); trying the previous one", path, err)
    return None
