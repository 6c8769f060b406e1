"""The script Lamorel's launcher starts in every process (RL processes and LLM servers alike).

Do not run it by hand: ``lamorel-launch --config-name lamorel_cpu`` starts
``python -m lamorel_launcher.launch`` with this script's absolute path, which starts
``n_rl_processes + n_llm_processes`` copies of it through ``accelerate launch``. Each copy composes
the same hydra config, validates it into our :class:`~sac_glam.config.Config`, and then
:func:`sac_glam.backends.lamorel.run_process` makes it an LLM server (serving until closed), RL rank 0
(the training loop, ``train(cfg, backend=LamorelBackend(...))``) or a relaying RL rank.

Preemption: every process ignores SIGTERM/SIGUSR1, except RL rank 0 once ``train()`` has installed its
handlers; rank 0 then writes ``{run_dir}/.lamorel_rl0.pid``, to which ``lamorel-launch`` forwards
those signals. On one, ``train()`` checkpoints and raises ``Preempted``; rank 0 writes
``{run_dir}/.preempted``, closes the servers (which then exit cleanly) and exits with 75.

A dead peer: a process whose collective fails because another process is gone (gloo's "Connection
closed by peer") prints one line and exits with 76, so that ``lamorel-launch`` can tell the process
that died from the ones that only lost it (``sac_glam/cli/lamorel_watch.py``).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from sac_glam.config import ConfigError, from_raw


def announce_when_handled(pid_file: Path, poll_s: float = 0.1) -> threading.Thread:
    """Write ``"<hostname> <pid>"`` to ``pid_file`` once SIGTERM and SIGUSR1 both have a Python handler
    (``train()``'s): lamorel-launch forwards them only from then on, so none is lost before."""
    from sac_glam.cli.launch import PREEMPT_SIGNALS

    def watch() -> None:
        while not all(callable(signal.getsignal(sig)) for sig in PREEMPT_SIGNALS):
            time.sleep(poll_s)
        tmp = pid_file.with_name(pid_file.name + ".tmp")
        tmp.write_text(f"{socket.gethostname()} {os.getpid()}\n")
        tmp.replace(pid_file)

    thread = threading.Thread(target=watch, name="announce-rl-rank0", daemon=True)
    thread.start()
    return thread


def config_from_hydra(config: DictConfig, name: str) -> Any:
    """Our Config from the composed hydra config (hydra's own keys dropped)."""
    raw = OmegaConf.to_container(config, resolve=True)
    assert isinstance(raw, dict)
    data = {str(k): v for k, v in raw.items() if k not in ("hydra", "defaults")}
    data.setdefault("name", name)
    if not data["name"]:
        data["name"] = name
    return from_raw(data)


@hydra.main(config_path=None, config_name=None, version_base=None)
def main(config: DictConfig) -> None:
    try:
        cfg = config_from_hydra(config, HydraConfig.get().job.config_name or "lamorel")
    except ConfigError as err:
        print(f"lamorel_rl_script: config error: {err}", file=sys.stderr)
        sys.exit(2)
    from sac_glam.cli.launch import (
        PREEMPT_SIGNALS,
        PREEMPTED_MARKER,
        RL_PID_FILE,
        user_error,
        write_user_error,
    )
    from sac_glam.run.train import EXIT_PREEMPTED, Preempted, RunStopped, run_dir_of, train

    # Only RL rank 0's training loop acts on SIGTERM/SIGUSR1 (train() installs its own handlers): the
    # servers and relays must live until rank 0 has checkpointed and closed them.
    for sig in PREEMPT_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    from sac_glam.backends.lamorel import run_process

    run_dir = run_dir_of(cfg)

    def rl_main(backend: Any) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        announce_when_handled(run_dir / RL_PID_FILE)
        try:
            result = train(cfg, backend=backend)
        except Preempted:
            # The checkpoint is saved: tell lamorel-launch (accelerate reports our 75 as its 1).
            (run_dir / PREEMPTED_MARKER).write_text(f"{os.getpid()}\n")
            raise
        print(f"done: {result.steps} steps in {result.run_dir}; training success rate "
              f"{result.success_rate:.3f}", flush=True)  # fmt: skip
        for key, value in sorted(result.eval.items()):
            if key.endswith("success_rate"):
                print(f"  {key}: {value:.3f}", flush=True)

    try:
        run_process(cfg, rl_main)  # closes the servers (and relays) in a finally
    except Preempted:
        sys.exit(EXIT_PREEMPTED)
    except RunStopped as stop:  # train() printed its one line (a refused resume, an unwritable checkpoint)
        write_user_error(run_dir, str(stop), int(stop.code or 1))
        raise
    except Exception as err:
        from sac_glam.cli.lamorel_watch import EXIT_PEER_LOST, lost_peer

        lost = lost_peer(err)
        if lost is not None:  # another process died: lamorel-launch names it from the agent's report
            print(f"lamorel_rl_script (rank {os.environ.get('RANK', '?')}): lost the connection to another "
                  f"Lamorel process ({lost}): exit {EXIT_PEER_LOST}", file=sys.stderr, flush=True)  # fmt: skip
            sys.exit(EXIT_PEER_LOST)
        # An error the user can fix (a checkpoint of another config, a full disk) is one line per
        # process, as in lamorel-launch; anything else keeps its traceback.
        failure = user_error(err, run_dir)
        if failure is None:
            raise
        message, code = failure
        print(
            f"lamorel_rl_script (rank {os.environ.get('RANK', '?')}): {message}", file=sys.stderr, flush=True
        )
        write_user_error(run_dir, message, code)  # lamorel-launch repeats it last, with this exit code
        sys.exit(code)


if __name__ == "__main__":
    main()
