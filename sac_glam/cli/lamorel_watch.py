"""Which Lamorel process died, and how: what ``lamorel-launch`` says when a peer is lost.

accelerate starts the Lamorel processes through torch's elastic agent, which runs inside Lamorel's
launcher (a hydra app). The agent knows each process's fate: when one exits non-zero or is killed, it
stops the others and raises ``ChildFailedError`` whose ``failures`` map each failed global rank to its
pid, exit code and signal. ``lamorel-launch`` runs that launcher as ``python -m sac_glam.cli.lamorel_watch``,
which catches the error and writes the failures to ``$SAC_GLAM_FAILURES_FILE`` (the run directory's
``.lamorel_failures.node0.json``, one per machine rank). A process that only lost its connection to a
dead peer (gloo's "Connection closed by peer") exits with :data:`EXIT_PEER_LOST` (``experiments/lamorel_rl_script.py``),
so the process that died first is the failure without that code.

Exit codes (docs/checkpoints.md, "A dead process"): :data:`EXIT_PEER_LOST` (76) when a process was
killed by a signal (SIGKILL: usually the kernel's out-of-memory killer; a node fault) or when this
node's processes only lost their peers (the dead one was on another node): the run resumes from its
last checkpoint with the same command. A process that exited with an error of its own (its traceback
is above it) keeps exit code 1: running again would most likely fail the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

#: A Lamorel process lost its connection to another one (which died or stopped answering).
EXIT_PEER_LOST = 76
#: Written in the run directory by the wrapped launcher: the failed ranks, as JSON. One file per
#: machine rank: on a multi-node run every node's launcher shares the run directory.
FAILURES_MARKER = ".lamorel_failures.node{machine_rank}.json"
#: The environment variable naming where the wrapped launcher writes the failures.
FAILURES_ENV = "SAC_GLAM_FAILURES_FILE"

#: What gloo (and NCCL) say when the other end of a collective is gone or silent.
_LOST_PEER_TEXTS = (
    "connection closed by peer",
    "connection reset by peer",
    "broken pipe",
    "timed out waiting",
    "remote worker crashing",
    "communicator was aborted",
)


def exception_chain(err: BaseException) -> Iterator[BaseException]:
    """``err`` and the exceptions it was raised from or while handling, outermost first."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def lost_peer(err: BaseException) -> str | None:
    """The first line of the error that says a peer process is gone, if ``err`` (or what it was raised
    from or while handling) is one: a ``torch.distributed`` error or gloo's text; else None."""
    dist_error: type[BaseException] | None = None
    with contextlib.suppress(ImportError, AttributeError):
        import torch.distributed as dist

        dist_error = dist.DistError
    for cause in exception_chain(err):
        text = str(cause)
        if (dist_error is not None and isinstance(cause, dist_error)) or any(
            t in text.lower() for t in _LOST_PEER_TEXTS
        ):
            first = text.strip().splitlines()[0] if text.strip() else type(cause).__name__
            return first[:300]
    return None


def role(rank: int, n_rl: int) -> str:
    """Lamorel's part for a global rank: ranks ``0 .. n_rl - 1`` are RL processes, the rest LLM servers."""
    return f"RL process {rank}" if rank < n_rl else f"LLM server {rank - n_rl}"


def failure_records(failures: Mapping[int, Any], host: str | None = None) -> list[dict[str, Any]]:
    """``ChildFailedError.failures`` (global rank -> ``ProcessFailure``) as plain records, by rank."""
    host = host or socket.gethostname()
    out = []
    for rank, failure in sorted(failures.items()):
        code = int(failure.exitcode)
        signal_name = failure.signal_name() if code < 0 else None
        out.append({"rank": int(rank), "pid": int(failure.pid), "exitcode": code, "signal": signal_name,
                    "host": host})  # fmt: skip
    return out


def write_failures(path: str | Path, records: list[dict[str, Any]]) -> None:
    """Write ``records`` whole (a temporary file renamed); best effort, the agent's report is printed too."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(OSError):
        tmp.write_text(json.dumps(records))
        tmp.replace(path)


def failures_file(run_dir: str | Path, machine_rank: int = 0) -> Path:
    """Where this node's wrapped launcher writes its failures."""
    return Path(run_dir) / FAILURES_MARKER.format(machine_rank=machine_rank)


def take_failures(run_dir: str | Path, machine_rank: int = 0) -> list[dict[str, Any]] | None:
    """The records this node's wrapped launcher left in ``run_dir``, consumed; or None."""
    path = failures_file(run_dir, machine_rank)
    try:
        records = json.loads(path.read_text())
        path.unlink()
    except (OSError, ValueError):
        return None
    return records if isinstance(records, list) and records else None


def _what(record: dict[str, Any], n_rl: int) -> str:
    who = f"{role(record['rank'], n_rl)} (rank {record['rank']}, pid {record['pid']} on {record['host']})"
    if record["exitcode"] < 0:
        name = record["signal"] or f"signal {-record['exitcode']}"
        hint = " (usually the out-of-memory killer: see `dmesg` or `sacct -o JobID,State,MaxRSS`)"
        return f"{who} was killed by {name}{hint if name == 'SIGKILL' else ''}"
    return f"{who} exited with code {record['exitcode']} (its error is above)"


def describe(records: list[dict[str, Any]], n_rl: int, run_dir: str | Path) -> tuple[str, int]:
    """The one line ``lamorel-launch`` prints last for the failed ranks, and its exit code."""
    dead = [r for r in records if r["exitcode"] != EXIT_PEER_LOST]
    lost = [r for r in records if r["exitcode"] == EXIT_PEER_LOST]
    resume = f"run the same command to resume from the last checkpoint in {run_dir}"
    if not dead:
        who = ", ".join(f"{role(r['rank'], n_rl)} (rank {r['rank']})" for r in lost)
        return (f"a Lamorel process on another node died or stopped answering: {who} lost the connection "
                f"to it (exit {EXIT_PEER_LOST}); {resume}", EXIT_PEER_LOST)  # fmt: skip
    killed = any(r["exitcode"] < 0 for r in dead)
    code = EXIT_PEER_LOST if killed else 1
    what = "; ".join(_what(r, n_rl) for r in dead)
    then = resume if killed else f"fix the error, then {resume}"
    return f"{what}; the other processes were stopped (exit {code}); {then}", code


def main() -> None:
    """``python -m sac_glam.cli.lamorel_watch <Lamorel launcher arguments>``: Lamorel's launcher, with the
    failed ranks written to ``$SAC_GLAM_FAILURES_FILE`` instead of hydra's traceback of the agent."""
    import lamorel_launcher.launch as launcher
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    launch_command = launcher.launch_command

    def recorded(args: Any) -> None:
        try:
            launch_command(args)
        except ChildFailedError as err:
            path = os.environ.get(FAILURES_ENV)
            if not path:
                raise
            write_failures(path, failure_records(err.failures))
            # SystemExit passes through hydra, which would print the agent's report as a traceback:
            # the agent has logged each failure already, and lamorel-launch prints the summary.
            raise SystemExit(1) from None

    launcher.launch_command = recorded  # main() looks the name up when it runs
    launcher.main()


if __name__ == "__main__":
    main()
