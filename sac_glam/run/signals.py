"""The stop requests a run honours: SIGTERM and SIGUSR1 (a scheduler's preemption, SLURM's warning) and
Ctrl-C, each turned into a checkpoint and exit 75 (``docs/checkpoints.md``). Shared by the training loop,
which checks the flag between iterations, and ``sac-glam experiment``, which forwards it to its runs."""

from __future__ import annotations

import os
import signal
from types import FrameType
from typing import Any, Self

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StopRequest:
    """A context that records the first stop signal in ``received`` and calls :meth:`stop` with it.

    A first Ctrl-C (SIGINT) is a stop request like SIGTERM, said at once in ``ctrl_c_message`` (the work
    may take minutes to reach its checkpoint); a second Ctrl-C is Python's KeyboardInterrupt again: abort
    at once, without a checkpoint. A SIGINT that the parent ignores (a job started in the background)
    stays ignored. The previous handlers come back on exit.
    """

    ctrl_c_message = b"\nCtrl-C: saving a checkpoint, then stopping (Ctrl-C again aborts without it)\n"

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Self:
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            os.write(2, self.ctrl_c_message)  # not print(): one interrupted by this handler would re-enter
        self.stop(signum)

    def stop(self, signum: int) -> None:
        """What a stop request does besides being recorded (nothing: the owner polls ``received``)."""

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
