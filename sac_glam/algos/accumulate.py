"""Gradient accumulation: split a batch into chunks that fit, with the same number of backward passes.

One helper for SAC and PPO (style point 9). Lamorel's own PPO example got its accumulation indices
wrong; and under DDP every data-parallel worker must call ``backward()`` the same number of times,
or the all-reduce hangs (docs/lamorel_facts.md). So the number of chunks depends only on the batch size
and the chunk size, never on the data.
"""

from __future__ import annotations

import torch

from sac_glam.algos import heap


def chunk_slices(batch_size: int, chunk_size: int) -> list[slice]:
    """Contiguous slices covering ``range(batch_size)`` with at most ``chunk_size`` rows each.

    Worked example: ``chunk_slices(10, 4)`` -> ``[0:4, 4:8, 8:10]``; the chunk weights for a mean loss
    are then 4/10, 4/10 and 2/10, so that the accumulated gradient equals the full-batch gradient.
    """
    if batch_size < 0 or chunk_size < 1:
        raise ValueError(f"need batch_size >= 0 and chunk_size >= 1, got {batch_size} and {chunk_size}")
    return [slice(i, min(i + chunk_size, batch_size)) for i in range(0, batch_size, chunk_size)]


def chunk_weight(chunk: slice, batch_size: int) -> float:
    """Weight of a chunk's mean loss in the full batch's mean: its share of the rows."""
    return (chunk.stop - chunk.start) / batch_size


def release_freed_memory(device: torch.device, n_chunks: int) -> None:
    """Hand the pages that a finished chunk freed back to the OS (CPU, updates of several chunks only;
    call after each backward).

    Accumulation keeps the live tensors of an update at one chunk's worth whatever the batch size
    (``tests/test_memory.py`` counts them), but glibc keeps freed heap memory mapped: chunks whose
    tensors come and go in a different order each time fragment the heap, and the process's peak RSS
    grew with the number of chunks (t5-small shape, chunks of 32: 2.84 -> 3.27 GiB from batch 32 to
    128 with the live tensors at 2.0 GiB; docs/paper_scale.md, "Measured on this CPU").
    ``malloc_trim(0)`` returns every whole free page, so the next chunk starts from the live tensors
    alone. On CUDA, torch's caching allocator reuses its blocks: nothing to do. An update of one chunk
    has no earlier chunk to make room for, and a trim per gradient step would cost the CPU default about
    10% of its throughput (48 against 54 transitions/s, alternated in one run): the training loop's trim
    at each progress record (``sac_glam/algos/heap.py``) keeps its long-run RSS flat instead.
    """
    if device.type == "cpu" and n_chunks > 1:
        heap.trim()
