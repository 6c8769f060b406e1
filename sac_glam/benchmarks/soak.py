"""``sac-glam bench soak``: does a long run's memory plateau once the replay buffer is full?

Trains a preset (default the CPU default ``sac_glam_her_cpu``, HER on) for ``--minutes`` of wall time,
with a ``--capacity`` small enough that the buffer fills early, then stops it with SIGUSR1 as SLURM
would (the run checkpoints and exits as preempted). At every metrics record (``--log-every``
transitions) it samples the process's resident memory beside the buffer's size; every checkpoint's
size and write time are recorded too. It prints RSS when the buffer first filled and at the end, the
growth in between (MiB and MiB per hour), and the checkpoints. Memory that still grows once the buffer
is full comes from something else (metrics, logs, caches, the tokenizer): ``growth after full`` should
be near 0. A few minutes cannot show a slow leak; the issue's soak is an hour
(``--minutes 60``) or a 100K buffer (``--capacity 100000``, the preset's own). Run::

    OMP_NUM_THREADS=1 sac-glam bench soak --minutes 3 --capacity 4000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sac_glam.benchmarks import print_rows
from sac_glam.helptext import plain
from sac_glam.run.configs import load_config

#: A buffer within this fraction of its capacity counts as full (it evicts whole episodes).
FULL = 0.97


def rss_mib() -> float:
    """Current resident set size (Linux ``/proc/self/statm``; elsewhere the peak, ``ru_maxrss``)."""
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def analyse(samples: list[dict[str, float]], capacity: int) -> dict[str, float]:
    """Growth of RSS from the first sample with a full buffer to the last one.

    ``samples``: ``{"t": seconds, "rss": MiB, "transitions": buffer size}`` in time order.
    Example: full at t = 60 s with 500 MiB, 520 MiB at t = 240 s -> growth 20 MiB, 400 MiB/hour;
    ``late_growth_mib`` is the same from the middle sample of that window to the end.
    """
    full = [s for s in samples if s["transitions"] >= FULL * capacity]
    out = {"peak_rss": max((s["rss"] for s in samples), default=float("nan"))}
    if len(full) < 2:
        nan = float("nan")
        return out | {"full_at_s": full[0]["t"] if full else nan, "growth_mib": nan, "growth_mib_per_h": nan,
                      "late_growth_mib": nan, "late_s": nan}  # fmt: skip
    first, mid, last = full[0], full[len(full) // 2], full[-1]
    growth = last["rss"] - first["rss"]
    return out | {
        "full_at_s": first["t"],
        "rss_at_full": first["rss"],
        "rss_at_end": last["rss"],
        "growth_mib": growth,
        "growth_mib_per_h": growth / max(last["t"] - first["t"], 1e-9) * 3600,
        # The second half alone: allocations that settle right after the buffer fills are not a leak.
        "late_growth_mib": last["rss"] - mid["rss"],
        "late_s": last["t"] - mid["t"],
    }


def soak(preset: str, minutes: float, capacity: int, log_every: int, checkpoint_every: int,
         threads: int, extra: list[str], run_dir: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Run the soak; returns the samples, the checkpoints and :func:`analyse`'s numbers."""
    import sac_glam.run.train as train_module
    from sac_glam.run.train import Preempted, train

    samples: list[dict[str, float]] = []
    checkpoints: list[dict[str, float]] = []
    start = time.perf_counter()
    real_log: Callable[..., None] = train_module.MetricsLogger.log
    real_save = train_module.save_checkpoint

    timer = threading.Timer(minutes * 60, lambda: os.kill(os.getpid(), signal.SIGUSR1))

    def log(self: Any, step: int, metrics: Mapping[str, float | int]) -> None:
        real_log(self, step, metrics)
        if not timer.is_alive() and not timer.finished.is_set():
            # Started at the first record, inside the training loop: by then train() handles SIGUSR1
            # (a signal during the set-up, before its handler, would kill the process).
            timer.start()
        if "buffer/transitions" in metrics:
            samples.append({"t": time.perf_counter() - start, "step": step, "rss": rss_mib(),
                            "transitions": float(metrics["buffer/transitions"])})  # fmt: skip

    def save(run_dir: str | Path, state: dict[str, Any]) -> Path:
        t0 = time.perf_counter()
        path = real_save(run_dir, state)
        checkpoints.append({"step": state["loop"]["steps"], "seconds": time.perf_counter() - t0,
                            "mib": path.stat().st_size / 2**20})  # fmt: skip
        return path

    with tempfile.TemporaryDirectory() as tmp:
        overrides = [f"train.total_steps={10**9}", "train.eval_every=0", "train.eval_splits=[]",
                     "train.progress=false", "train.tensorboard=false", f"train.threads={threads}",
                     f"train.checkpoint_every={checkpoint_every}", f"train.log_every={log_every}",
                     f"buffer.capacity={capacity}", f"train.run_dir={run_dir or tmp}"]  # fmt: skip
        cfg = load_config(preset, overrides + extra)
        train_module.MetricsLogger.log = log  # type: ignore[method-assign]
        train_module.save_checkpoint = save
        try:
            train(cfg)
        except Preempted:
            pass  # the timer's SIGUSR1: the run checkpointed and stopped, as under SLURM
        finally:
            timer.cancel()
            train_module.MetricsLogger.log = real_log  # type: ignore[method-assign]
            train_module.save_checkpoint = real_save
    return {"preset": preset, "capacity": capacity, "minutes": minutes, "samples": samples,
            "checkpoints": checkpoints, **analyse(samples, capacity)}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sac-glam bench soak", description=plain(__doc__),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--preset", default="sac_glam_her_cpu", help="config name (default the CPU default)")
    parser.add_argument(
        "--minutes",
        type=float,
        default=3.0,
        help="minutes of training (from its first record) before SIGUSR1 (default 3)",
    )
    parser.add_argument("--capacity", type=int, default=4000, help="buffer.capacity (default 4000)")
    parser.add_argument("--log-every", type=int, default=256, help="transitions between samples")
    parser.add_argument(
        "--checkpoint-every", type=int, default=200, help="gradient steps between checkpoints"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--run-dir", default=None, help="keep the run here (default a temporary directory)")
    parser.add_argument(
        "--json", action="store_true", help="print JSON (with every sample) instead of a table"
    )
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the preset")
    args = parser.parse_args(argv)
    # With --json, stdout carries the JSON alone: the run's own lines (the SIGUSR1 stop) go to stderr.
    with contextlib.redirect_stdout(sys.stderr if args.json else sys.stdout):
        r = soak(args.preset, args.minutes, args.capacity, args.log_every, args.checkpoint_every, args.threads,
                 args.overrides, args.run_dir)  # fmt: skip
    if args.json:
        print(json.dumps(r, indent=2))
        return
    samples, ckpts = r["samples"], r["checkpoints"]
    last = samples[-1] if samples else {"step": 0, "transitions": 0, "t": 0.0}
    n_full = len([s for s in samples if s["transitions"] >= FULL * args.capacity])
    nan = float("nan")
    rows = [
        ("preset, threads", f"{args.preset}, {args.threads}"),
        ("wall time, transitions", f"{last['t']:.0f} s, {int(last['step']):,} (stopped by SIGUSR1)"),
        (
            "buffer (transitions)",
            f"{int(last['transitions']):,} / {args.capacity:,}, full after {r['full_at_s']:.0f} s",
        ),
        ("RSS when full / at end (MiB)", f"{r.get('rss_at_full', nan):.0f} / {r.get('rss_at_end', nan):.0f}"),
        ("peak RSS (MiB)", f"{r['peak_rss']:.0f}"),
        (
            "growth after full (MiB)",
            f"{r['growth_mib']:+.1f} ({r['growth_mib_per_h']:+.0f}/hour, {n_full} samples)",
        ),
        ("growth, 2nd half of that (MiB)", f"{r['late_growth_mib']:+.1f} over {r['late_s']:.0f} s"),
    ]
    if ckpts:
        mean_s = sum(c["seconds"] for c in ckpts) / len(ckpts)
        rows += [
            ("checkpoints written", f"{len(ckpts)}"),
            ("last checkpoint (MiB)", f"{ckpts[-1]['mib']:.1f} at step {int(ckpts[-1]['step']):,}"),
            ("write time mean / max (s)", f"{mean_s:.2f} / {max(c['seconds'] for c in ckpts):.2f}"),
        ]
    print_rows(rows)


if __name__ == "__main__":
    main()
