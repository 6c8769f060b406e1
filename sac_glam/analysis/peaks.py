"""Over training, not only at the end: each run's best evaluation and its last, per split and goal type.

Held-out goals can rise with training or fall after a peak (issue 15's long run: test success 0.37 at
85K steps, 0.13-0.31 after), which success at the budgets alone does not show; and a race on the clock
(``race-full``) asks for the best success each method reaches, whatever its runs' lengths in steps. Per
run and key (``eval/{split}/success_rate`` and its ``/{goal type}``), over all of the run's evaluations:

- **peak**: the highest value and the step of its first occurrence;
- **last**: the value of the run's last evaluation;
- **drop**: peak - last (0 when the last evaluation is the best).

The maximum of noisy evaluations is biased upwards: with 32 episodes per goal type an evaluation carries
about ±0.07 of binomial noise, so a drop of that size says nothing alone; one that every seed shows,
or that is several times larger, does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sac_glam.analysis.plots import Records
from sac_glam.envs.goals import GOAL_TYPES

#: The column of the goal pool's mean, before the goal types.
ALL = "all"


@dataclass(frozen=True)
class Peak:
    """One run's curve of one key: its best evaluation (value, first step) and its last."""

    value: float
    step: int
    last: float

    @property
    def drop(self) -> float:
        return self.value - self.last


def peak_of(records: Records, key: str) -> Peak | None:
    """:class:`Peak` of ``key`` over the run's evaluations; None when it never logged ``key``."""
    pts = sorted((int(r["step"]), float(r[key])) for r in records if key in r and np.isfinite(r[key]))
    if not pts:
        return None
    best = max(pts, key=lambda p: (p[1], -p[0]))  # the highest value, at its first step
    return Peak(value=best[1], step=best[0], last=pts[-1][1])


@dataclass
class PeakStat:
    """The :class:`Peak` of each seed of one label for one key, and their means and population stds."""

    by_seed: dict[int, Peak] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.by_seed)

    def mean_std(self, what: str) -> tuple[float, float]:
        """Mean and std over seeds of ``value``, ``step``, ``last`` or ``drop``."""
        xs = [float(getattr(p, what)) for p in self.by_seed.values()]
        return (float(np.mean(xs)), float(np.std(xs))) if xs else (float("nan"), float("nan"))

    @property
    def seeds_below_peak(self) -> int:
        """Seeds whose last evaluation is below their best."""
        return sum(p.drop > 0 for p in self.by_seed.values())

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n": self.n, "seeds_below_peak": self.seeds_below_peak}
        for what in ("value", "step", "last", "drop"):
            m, s = self.mean_std(what)
            out[what] = {"mean": m if self.n else None, "std": s if self.n else None}
        out["by_seed"] = {
            str(s): {"peak": p.value, "step": p.step, "last": p.last} for s, p in self.by_seed.items()
        }
        return out


def label_peaks(seeds: Mapping[int, Records], eval_keys: Mapping[str, str]) -> dict[str, dict[str, PeakStat]]:
    """split -> ``all`` or goal type -> :class:`PeakStat`, for the keys some seed logged."""
    out: dict[str, dict[str, PeakStat]] = {}
    for split, key in eval_keys.items():
        for col in (ALL, *GOAL_TYPES):
            k = key if col == ALL else f"{key}/{col}"
            found = {s: peak_of(recs, k) for s, recs in seeds.items()}
            hits = {s: p for s, p in found.items() if p is not None}
            if hits:
                out.setdefault(split, {})[col] = PeakStat(hits)
    return out
