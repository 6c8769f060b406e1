"""Two lanes for one SAC update: the policy LLM's passes on the caller's thread, the critic LLM's on a
worker thread, at the same time (``train.parallel_llms``).

With a separate critic LLM (``critic.share_llm=false``) an update runs two independent LLM pipelines:
the policy's forward on s' and s and the actor loss's backward, and the critic's (target) forward on s'
and s and the critic loss's backward. Neither reads the other's graph (the actor loss reads Q detached,
the critic's target is computed without gradients), so they can run concurrently. The tiny presets'
operators are small (d_model 64, head dim 8): two threads inside each operator speed an update up
~1.3x on 2 cores, while one thread per pipeline, two pipelines at once, ~1.9x (docs/benchmarks.md,
"Two lanes").

Exact: every operator runs on one lane with that lane's intra-op threads, so an update with lanes of
``k`` threads gives the numbers, to the bit, of the same update run sequentially with ``k`` threads
(``tests/test_lanes.py``). The autograd engine runs a CPU backward on the thread that calls it, and two
backward calls on disjoint graphs may run at once.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

A = TypeVar("A")
B = TypeVar("B")


class Lanes:
    """Runs ``main`` on the caller's thread with ``main_threads`` intra-op threads and ``side`` on one
    worker thread with ``side_threads``, concurrently; outside :meth:`run` the caller keeps its own
    thread count (acting and evaluation use every thread)."""

    def __init__(self, main_threads: int, side_threads: int) -> None:
        self.main_threads = main_threads
        self.side_threads = side_threads
        self._pool = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="sac-glam-critic-lane",
            initializer=torch.set_num_threads,
            initargs=(side_threads,),
        )

    def run(self, main: Callable[[], A], side: Callable[[], B]) -> tuple[A, B]:
        """``(main(), side())``; ``side`` sees the caller's grad mode (thread-local in torch). If either
        raises, the other is still waited for, then the first error is raised."""
        grad = torch.is_grad_enabled()

        def side_with_grad_mode() -> B:
            with torch.set_grad_enabled(grad):
                return side()

        outer = torch.get_num_threads()
        torch.set_num_threads(self.main_threads)
        future = self._pool.submit(side_with_grad_mode)
        try:
            a = main()
        except BaseException:
            future.exception()  # wait: the side lane must not outlive the call that started it
            raise
        finally:
            torch.set_num_threads(outer)
        return a, future.result()

    def close(self) -> None:
        """Stop the worker thread now. Without it the idle worker exits when this object is collected
        (``ThreadPoolExecutor`` holds only a weak reference to it there) or at interpreter exit."""
        self._pool.shutdown(wait=True)


def make_lanes(device: torch.device, separate_critic: bool, enabled: bool) -> Lanes | None:
    """Lanes when they can help: on the CPU, with a separate critic LLM and at least 2 torch threads,
    split as ceil(threads / 2) for the caller's lane and the rest for the critic's."""
    threads = torch.get_num_threads()
    if not (enabled and separate_critic and device.type == "cpu" and threads >= 2):
        return None
    return Lanes(threads - threads // 2, threads // 2)
