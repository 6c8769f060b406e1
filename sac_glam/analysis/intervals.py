"""Interval estimates over seeds with ``rliable`` (Agarwal et al. 2021, "Deep RL at the edge of the
statistical precipice"): the interquartile mean (IQM) with a stratified bootstrap confidence interval,
and the probability of improvement P(X > Y) between two labels with its own interval.

Scores are matrices ``(runs, tasks)``; ``sac-glam report`` passes one task (a success rate at a step
budget on one goal split), so stratifying over tasks reduces to resampling runs. Both use rliable's
bootstraps (``StratifiedBootstrap``, ``StratifiedIndependentBootstrap`` for two labels with their own
number of runs) with its default percentile intervals.

Two departures from calling rliable as-is, both checked in ``tests/test_report.py``:

- rliable 1.2.0 draws its bootstrap indices from numpy's *global* generator (``np.random.choice``), not
  from the ``random_state`` it accepts; :func:`_seeded` seeds the global generator around each call (and
  restores it) so that a report's intervals are reproducible.
- P(X > Y) is rliable's statistic (the Mann-Whitney U of X over Y divided by ``n_x * n_y``, ties counting
  1/2, averaged over tasks) computed in numpy: ``rliable.metrics.probability_of_improvement`` calls scipy
  once per bootstrap replicate, about 10x slower for the same numbers.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType

import numpy as np

#: Bootstrap replicates per interval (rliable's default is 50,000; 10,000 keeps ``sac-glam report``
#: within seconds and moves the bounds by about 0.01 at 3-10 runs).
DEFAULT_REPS = 10_000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate and its ``CONFIDENCE`` interval [low, high]."""

    point: float
    low: float
    high: float

    def excludes(self, value: float) -> bool:
        """Whether ``value`` lies outside [low, high] (e.g. 0.5 for a probability of improvement)."""
        return value < self.low or value > self.high

    def to_json(self) -> dict[str, float]:
        return {"point": self.point, "low": self.low, "high": self.high}


def _rliable(module: str) -> ModuleType:
    """``rliable.<module>``, imported on first use: rliable (with scipy, statsmodels, pandas) is the
    ``[report]`` extra, not a base need, so that training installs without it (pyproject.toml)."""
    try:
        return importlib.import_module(f"rliable.{module}")
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            f"sac-glam report's interval estimates need rliable ({e}): pip install 'sac-glam[report]'"
        ) from e


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _as_matrix(scores: np.ndarray | list[float]) -> np.ndarray:
    """Scores as ``(runs, tasks)``: a 1-D sequence is one task."""
    a = np.asarray(scores, dtype=float)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] == 0:
        raise ValueError(f"scores must be a non-empty (runs, tasks) matrix, got shape {a.shape}")
    return a


def iqm(scores_RT: np.ndarray) -> np.ndarray:
    """rliable's IQM: the mean of the middle 50% of all run x task scores (scipy's trim_mean, 25%)."""
    return np.array([_rliable("metrics").aggregate_iqm(scores_RT)])


def probability_of_improvement(x_RT: np.ndarray, y_RT: np.ndarray) -> float:
    """P(X > Y) averaged over tasks: U(X over Y) / (n_x n_y), a tie counting 1/2 (rliable's statistic)."""
    x, y = x_RT[:, None, :], y_RT[None, :, :]
    return float(((x > y) + 0.5 * (x == y)).mean(axis=(0, 1)).mean())


def _interval(point: float, bounds: np.ndarray) -> Interval:
    low, high = np.asarray(bounds, dtype=float).reshape(2)
    return Interval(float(point), float(low), float(high))


def iqm_interval(scores: np.ndarray | list[float], reps: int = DEFAULT_REPS, seed: int = 0) -> Interval:
    """The IQM of ``scores`` (runs x tasks) with its stratified bootstrap interval over runs."""
    m = _as_matrix(scores)
    func: Callable[[np.ndarray], np.ndarray] = iqm
    with _seeded(seed):
        points, cis = _rliable("library").get_interval_estimates(
            {"x": m}, func, reps=reps, confidence_interval_size=CONFIDENCE
        )
    return _interval(float(points["x"][0]), cis["x"])


def improvement_interval(
    x: np.ndarray | list[float], y: np.ndarray | list[float], reps: int = DEFAULT_REPS, seed: int = 0
) -> Interval:
    """P(X > Y) with the interval of rliable's independent stratified bootstrap of X's and Y's runs."""
    mx, my = _as_matrix(x), _as_matrix(y)
    if mx.shape[1] != my.shape[1]:
        raise ValueError(
            f"X has {mx.shape[1]} tasks and Y {my.shape[1]}: they must be scored on the same tasks"
        )
    with _seeded(seed):
        points, cis = _rliable("library").get_interval_estimates(
            {"x,y": (mx, my)}, probability_of_improvement, reps=reps, confidence_interval_size=CONFIDENCE
        )
    return _interval(float(points["x,y"]), cis["x,y"])


def improvement_table(
    scores: Mapping[str, np.ndarray | list[float]], reps: int = DEFAULT_REPS, seed: int = 0
) -> dict[tuple[str, str], Interval]:
    """P(X > Y) for every pair of labels X before Y in ``scores``' order (P(Y > X) is 1 minus it)."""
    labels = list(scores)
    return {
        (a, b): improvement_interval(scores[a], scores[b], reps, seed)
        for i, a in enumerate(labels)
        for b in labels[i + 1 :]
    }
