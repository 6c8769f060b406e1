"""Give the heap's free memory back to the operating system, so that a long run's RSS tracks what it uses.

A training step allocates and frees tensors of ever-changing shapes (prompts and action sets differ from
batch to batch). glibc's allocator keeps the freed chunks for reuse, and the holes between live ones
rarely line up with the next request: in an hour of the CPU default, with the replay buffer full, RSS
grew by 48 MiB while the memory in use grew by 4 (``sac-glam bench soak``, docs/checkpoints.md). glibc's
``malloc_trim(0)`` returns every free page (not only the heap's top) with ``madvise``; the training loop
calls it at each progress record, a few milliseconds every ``train.log_every`` steps. Elsewhere (macOS,
musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any


@functools.cache
def _libc() -> Any | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def trim() -> bool:
    """Release the free heap pages to the OS (glibc ``malloc_trim(0)``); False where there is none."""
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
