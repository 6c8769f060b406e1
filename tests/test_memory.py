"""Memory of chunked updates: one chunk's tensors whatever the batch, and freed pages handed back.

docs/paper_scale.md ("Measured on this CPU"): the peak RSS of a SAC step grew with the number of
chunks of 32 transitions. The live tensors do not grow (the first test counts them); glibc kept the
freed heap pages of earlier chunks (the last two tests).
"""

from __future__ import annotations

import os
import sys

import pytest
import torch
from llm_fixtures import ACTIONS, PROMPTS
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from sac_glam.algos import updaters
from sac_glam.algos.accumulate import release_freed_memory
from sac_glam.algos.updaters import PPOUpdater, SACUpdater
from sac_glam.buffers.replay import SACBatch
from sac_glam.buffers.rollout import PPOBatch
from sac_glam.config import CriticConfig, ModelConfig, PPOConfig, SACConfig, TinyModelConfig
from sac_glam.llm.agent import LLMAgent

TINY = TinyModelConfig(d_model=32, n_layers=1, n_heads=4, d_ff=64)
CHUNK = 3  # states per chunk: the three fixture states, ~13 (prompt, action) rows


class LiveTensorBytes(TorchDispatchMode):
    """Bytes of the tensor storages that ops create under this mode and that are still alive, and
    their peak: activations, saved-for-backward tensors, logits, gradients (not the inputs)."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.total = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for key in [k for k, (ref, _) in self.live.items() if ref.expired()]:
            self.total -= self.live.pop(key)[1]
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.layout == torch.strided:
                storage = t.untyped_storage()
                if storage.data_ptr() and storage.data_ptr() not in self.live:
                    self.live[storage.data_ptr()] = (StorageWeakRef(storage), storage.nbytes())
                    self.total += storage.nbytes()
        self.peak = max(self.peak, self.total)
        return out


def _sac_batch(n_states: int) -> SACBatch:
    reps = n_states // len(PROMPTS)
    return SACBatch(
        prompts=PROMPTS * reps,
        actions=ACTIONS * reps,
        action_ids=torch.tensor([0, 1, 2] * reps),
        returns=torch.tensor([0.0, 1.0, 0.0] * reps),
        next_prompts=PROMPTS[::-1] * reps,
        next_actions=ACTIONS[::-1] * reps,
        discounts=torch.tensor([0.99, 0.0, 0.99] * reps),
        is_her=torch.tensor([False, True, False] * reps),
        goal_types=["grow_then_grow", "grasp", "grasp"] * reps,
        returns_to_go=torch.tensor([0.5, 1.0, 0.0] * reps),
    )


def _ppo_batch(n_states: int) -> PPOBatch:
    reps = n_states // len(PROMPTS)
    return PPOBatch(
        prompts=PROMPTS * reps,
        actions=ACTIONS * reps,
        action_ids=torch.tensor([0, 1, 2] * reps),
        old_log_probs=torch.tensor([-1.6, -0.7, -1.8] * reps),
        old_values=torch.zeros(n_states),
        advantages=torch.tensor([0.5, -1.0, 0.3] * reps),
        returns=torch.tensor([0.5, -1.0, 0.3] * reps),
    )


def _sac_updater() -> SACUpdater:
    torch.manual_seed(0)
    # The paper's layout: shared LLM with critic gradients (Appendix B), target adapter, constrained.
    agent = LLMAgent(ModelConfig(name="tiny-t5", tiny=TINY, lora=True), CriticConfig(width=16))
    return SACUpdater(agent, SACConfig(chunk_size=CHUNK, warmup_updates=0), tau=0.1)


def _ppo_updater() -> PPOUpdater:
    torch.manual_seed(0)
    agent = LLMAgent(
        ModelConfig(name="tiny-t5", tiny=TINY, lora=True), CriticConfig(width=16), need_value=True
    )
    return PPOUpdater(agent, PPOConfig(chunk_size=CHUNK))


def _peak_update_bytes(make_updater, make_batch, n_states: int) -> int:  # type: ignore[no-untyped-def]
    updater = make_updater()
    updater.update(make_batch(n_states))  # the first step creates Adam's state: not an activation
    with LiveTensorBytes() as counter:
        updater.update(make_batch(n_states))
    return counter.peak


@pytest.mark.parametrize(
    ("make_updater", "make_batch"),
    [(_sac_updater, _sac_batch), (_ppo_updater, _ppo_batch)],
    ids=["sac", "ppo"],
)
def test_live_tensors_of_an_update_stay_one_chunk_whatever_the_batch(make_updater, make_batch):
    one_chunk = _peak_update_bytes(make_updater, make_batch, CHUNK)
    four_chunks = _peak_update_bytes(make_updater, make_batch, 4 * CHUNK)
    # Holding any chunk's graph, logits or hidden states past its backward would add about one
    # chunk's worth per extra chunk (up to 4x); per-state statistics (B floats) are far below 1.3x.
    assert four_chunks <= 1.3 * one_chunk, (one_chunk, four_chunks)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim and /proc")
def test_release_freed_memory_hands_freed_heap_pages_back():
    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    # Freeing an mmapped block raises glibc's mmap threshold to its size: the 1 MiB blocks below then
    # come from the heap, which cannot shrink below the last one kept (the fragmentation of chunks).
    torch.empty(8 << 20, dtype=torch.uint8).fill_(1)
    before = rss()
    blocks = [torch.ones(1 << 20, dtype=torch.uint8) for _ in range(128)]
    kept = blocks[-1]
    del blocks
    held = rss() - before
    release_freed_memory(torch.device("cpu"), 2)
    after = rss() - before
    assert held > 100 << 20 and after < 16 << 20, (held, after)
    assert kept.sum() == 1 << 20


@pytest.mark.parametrize(
    ("make_updater", "make_batch"),
    [(_sac_updater, _sac_batch), (_ppo_updater, _ppo_batch)],
    ids=["sac", "ppo"],
)
def test_updaters_release_freed_memory_after_every_chunk(monkeypatch, make_updater, make_batch):
    calls: list[tuple[torch.device, int]] = []
    monkeypatch.setattr(updaters, "release_freed_memory", lambda device, n: calls.append((device, n)))
    make_updater().update(make_batch(4 * CHUNK))
    assert calls == [(torch.device("cpu"), 4)] * 4


def test_release_freed_memory_trims_only_between_chunks_on_the_cpu(monkeypatch):
    from sac_glam.algos import heap

    trims: list[int] = []
    monkeypatch.setattr(heap, "trim", lambda: trims.append(1) or True)
    release_freed_memory(
        torch.device("cpu"), 1
    )  # one chunk: left to the loop's trim (sac_glam/algos/heap.py)
    release_freed_memory(torch.device("meta"), 4)  # not the CPU heap
    assert trims == []
    release_freed_memory(torch.device("cpu"), 4)
    assert trims == [1]
