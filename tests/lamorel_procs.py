"""Process helpers for the tests that start real Lamorel runs (``/proc`` based, Linux only)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path


def processes_mentioning(text: str) -> list[int]:
    """Processes (not this one) whose command line contains ``text``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and proc.name != str(os.getpid()):
            try:
                if text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(proc.name))
            except OSError:
                pass
    return pids


def pids_with_env(text: str, var: str) -> list[int]:
    """Processes whose command line mentions ``text`` and whose environment holds ``var``."""
    found = []
    for pid in processes_mentioning(text):
        try:
            if var.encode() in (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0"):
                found.append(pid)
        except OSError:
            pass
    return found


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants, read from /proc/*/stat (parent pid is field 4)."""
    parent: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            # The command name (field 2) may hold spaces: split after its closing parenthesis.
            with contextlib.suppress(OSError, IndexError, ValueError):
                parent[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    tree, frontier = [root], [root]
    while frontier:
        children = [pid for pid, ppid in parent.items() if ppid in frontier]
        tree += children
        frontier = children
    return tree


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def kill_lingering(text: str, wait_s: float = 30.0) -> list[int]:
    """Wait up to ``wait_s`` for the processes mentioning ``text`` to end; SIGKILL and return the rest."""
    deadline = time.monotonic() + wait_s
    while processes_mentioning(text) and time.monotonic() < deadline:
        time.sleep(0.5)
    lingering = processes_mentioning(text)
    kill_all(lingering)
    return lingering


def grad_steps(metrics: Path) -> float:
    """The largest ``train/grad_steps`` logged in a ``metrics.jsonl`` so far (0 before any)."""
    try:
        lines = metrics.read_text().splitlines()
    except OSError:
        return 0.0
    return max((json.loads(line).get("train/grad_steps", 0.0) for line in lines if line.strip()), default=0.0)
