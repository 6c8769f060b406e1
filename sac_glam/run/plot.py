"""Plots of one run (the end of every training run). Multi-run figures live in ``plots/``."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: runs on clusters and in CI without a display
import matplotlib.pyplot as plt

from sac_glam.run.logging import METRICS_FILE, read_metrics, series


def plot_run(run_dir: str | Path) -> Path | None:
    """``success.png``: training and evaluation success rate vs environment steps."""
    run_dir = Path(run_dir)
    records = read_metrics(run_dir / METRICS_FILE)
    if not records:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (
        ("rollout/success_rate", "training episodes"),
        ("eval/train/success_rate", "eval: train goals"),
        ("eval/test/success_rate", "eval: held-out test goals"),
    ):
        x, y = series(records, key)
        if x:
            ax.plot(x, y, label=label, marker="o" if key.startswith("eval") else None, markersize=3)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.02, 1.02)
    title = f"{run_dir.parent.name} ({run_dir.name})" if run_dir.name.startswith("seed") else run_dir.name
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    out = run_dir / "success.png"
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
