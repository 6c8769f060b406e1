"""sac_glam/algos/heap.py: freed heap memory goes back to the OS, and the training loop asks for it."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import pytest
from llm_fixtures import SMALL_TINY_MODEL

from sac_glam.algos import heap


def _rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_trim_returns_the_free_chunks_between_live_ones() -> None:
    # 200 MB of 2 KB blocks (malloc'd, above pymalloc's 512 bytes; below mmap's threshold), then every
    # 16th kept: the freed blocks are holes between live ones, which free() alone keeps in the heap.
    blocks = [bytearray(2000) for _ in range(100_000)]
    kept = blocks[::16]
    del blocks
    before = _rss_mib()
    assert heap.trim()
    after = _rss_mib()
    assert before - after > 100, (before, after)  # most of the ~190 MB of holes is released
    assert len(kept) == 6250  # (still alive: the holes were between live blocks)


def test_the_training_loop_trims_at_each_progress_record(monkeypatch, tmp_path) -> None:
    import sac_glam.run.train as train_module
    from sac_glam.run.configs import load_config

    events: list[str] = []
    real_log_progress = train_module._log_progress
    monkeypatch.setattr(heap, "trim", lambda: events.append("trim") or True)
    monkeypatch.setattr(train_module, "_log_progress",
                        lambda *a: (events.append("log"), real_log_progress(*a))[1])  # fmt: skip
    cfg = load_config("sac_glam_her_cpu", [
        "env.n_envs=4", "env.max_steps=6", *SMALL_TINY_MODEL, "critic.width=32", "sac.batch_size=8", "sac.learning_starts=16",
        "sac.update_every=8", "sac.n_updates=1", "train.total_steps=64", "train.log_every=16",
        "train.eval_every=0", "train.eval_splits=[]", "train.progress=false", "train.tensorboard=false",
        "train.threads=1", f"train.run_dir={tmp_path}",
    ])  # fmt: skip
    train_module.train(cfg)
    # Every record of the loop is followed by a trim (the final record after the loop may not be).
    n = events.count("trim")
    assert n >= 4 and events[: 2 * n] == ["log", "trim"] * n, events
    assert events[2 * n :] in ([], ["log"]), events
