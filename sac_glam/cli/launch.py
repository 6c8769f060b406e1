"""``lamorel-launch``: the training entry point.

    lamorel-launch                                   # the CPU default: SAC-GLAM+HER, N = 3, tiny-causal
    lamorel-launch --config-name sac_glam_cpu train.seed=1 train.total_steps=20000

With ``train.backend=local`` (every CPU preset) it trains in this process. With
``train.backend=lamorel`` it starts Lamorel's launcher with the absolute config directory and the RL
script (``experiments/lamorel_rl_script.py``) filled in, so that

    lamorel-launch --config-name lamorel_cpu train.total_steps=640

runs ``python -m sac_glam.cli.lamorel_watch --config-path /abs/lamorel_configs --config-name lamorel_cpu
++rl_script_args.path=/abs/experiments/lamorel_rl_script.py ++train.total_steps=640 ...``
(Lamorel's ``lamorel_launcher.launch``, recording which process failed: ``sac_glam/cli/lamorel_watch.py``).

Errors a user can fix (a config key, a model that cannot be loaded, a run directory that cannot be
written, a full disk, a checkpoint of another config) print one line naming the key or path and exit
with 2 (configuration), 1 (the machine) or the training loop's own code (74: a checkpoint could not
be written); Ctrl-C checkpoints and exits with 75 as a preemption does (a second Ctrl-C aborts at once:
130). A Lamorel process killed (an out-of-memory kill, a node fault) ends
the run with one line naming it and exit 76: the same command resumes (docs/checkpoints.md).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib.util
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from sac_glam.cli.keys import describe_keys, expand_sweep, split_sweep
from sac_glam.cli.lamorel_watch import exception_chain
from sac_glam.config import (
    DEFAULT_CONFIG,
    Config,
    ConfigError,
    available_configs,
    config_diff,
    config_dir,
    first_existing,
    to_dict,
)
from sac_glam.helptext import plain
from sac_glam.run.configs import resolve

RL_SCRIPT = Path("experiments") / "lamorel_rl_script.py"


def rl_script_path() -> Path:
    """``experiments/lamorel_rl_script.py`` of the source tree (or of the working directory), absolute."""
    return first_existing(
        [Path(__file__).resolve().parents[2] / RL_SCRIPT, Path.cwd() / RL_SCRIPT],
        "Lamorel RL script",
        "train.backend=lamorel runs experiments/lamorel_rl_script.py of a clone of the repository, so run "
        "lamorel-launch from the clone's root (a wheel install carries the configs, not the script)",
    )


def lamorel_command(cfg: Config, config_name: str, config_path: str | Path, overrides: Sequence[str],
                    script: str | Path, python: str = sys.executable) -> list[str]:  # fmt: skip
    """The command that runs Lamorel's launcher (through :mod:`sac_glam.cli.lamorel_watch`) for a lamorel config.

    Overrides get hydra's ``++`` (set or add): our dataclass defaults make many keys valid that the
    YAML does not list, and hydra's struct mode would reject a plain ``key=value`` for those. The run
    directory is made absolute, and hydra's run directory pinned to ``.``, so that neither the launcher
    nor the processes it starts move the run elsewhere (Lamorel's launcher is a hydra app).
    """
    from sac_glam.run.train import run_dir_of

    plain = [o.lstrip("+") for o in overrides]
    run_dir = Path(run_dir_of(cfg)).resolve()
    return [
        python, "-m", "sac_glam.cli.lamorel_watch",
        "--config-path", str(Path(config_path).resolve()), "--config-name", config_name,
        f"++rl_script_args.path={Path(script).resolve()}",
        *[f"++{o}" for o in plain if not o.startswith("train.run_dir=")],
        f"++train.run_dir={run_dir}",
        "hydra.run.dir=.", "hydra.output_subdir=null",
        # hydra's log files (the launcher's, every process's) go to the run directory, not the cwd.
        f"hydra.job_logging.handlers.file.filename={run_dir}/${{hydra.job.name}}.log",
    ]  # fmt: skip


#: The signals that preempt a run (what SLURM sends before a time limit): the training loop checkpoints.
PREEMPT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
#: Written in the run directory by RL rank 0 once its preemption checkpoint is saved.
PREEMPTED_MARKER = ".preempted"
#: ``"<hostname> <pid>"`` of RL rank 0, written once its training loop handles PREEMPT_SIGNALS.
RL_PID_FILE = ".lamorel_rl0.pid"
#: Written in the run directory by a Lamorel process stopped by an error the user can fix: its exit
#: code, then its one line (:func:`user_error`), which lamorel-launch repeats after accelerate's report.
USER_ERROR_MARKER = ".lamorel_user_error"


def write_user_error(run_dir: str | Path, message: str, code: int) -> None:
    """Leave ``code`` and ``message`` for lamorel-launch (written whole: a temporary file renamed).
    Best effort: the process has printed the line already, and the directory may be what failed."""
    path = Path(run_dir) / USER_ERROR_MARKER
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(OSError):
        tmp.write_text(f"{code}\n{message}\n")
        tmp.replace(path)


def take_user_error(run_dir: str | Path) -> tuple[str, int] | None:
    """The ``(message, code)`` a Lamorel process left with :func:`write_user_error`, consumed; or None."""
    path = Path(run_dir) / USER_ERROR_MARKER
    try:
        code, message = path.read_text().split("\n", 1)
        path.unlink()
        return message.strip(), int(code)
    except (OSError, ValueError):
        return None


def launcher_exit_code(returncode: int, run_dir: str | Path) -> int:
    """``lamorel-launch``'s exit code once Lamorel's launcher has exited with ``returncode``.

    accelerate's launcher reports a failed worker as its own exit code 1, so RL rank 0's preemption
    (exit 75) is recognised by the marker it leaves in the run directory, which this consumes: 75 then,
    else the launcher's code (128 + N when signal N killed it, as a shell reports it).
    """
    from sac_glam.run.train import EXIT_PREEMPTED

    marker = Path(run_dir) / PREEMPTED_MARKER
    if marker.exists():
        marker.unlink(missing_ok=True)
        return EXIT_PREEMPTED
    return 128 - returncode if returncode < 0 else returncode


def rl_rank0_pid(run_dir: str | Path) -> int | None:
    """RL rank 0's pid from ``run_dir/.lamorel_rl0.pid`` when it runs on this host, else None (not
    started yet, or another node of a multi-node run: that node's lamorel-launch forwards the signal)."""
    try:
        host, pid = (Path(run_dir) / RL_PID_FILE).read_text().split()
    except (OSError, ValueError):
        return None
    return int(pid) if host == socket.gethostname() and pid.isdigit() else None


def _ignore_preempt_signals() -> None:
    # In the launcher's process, between fork and exec; inherited (SIG_IGN survives exec) by accelerate's
    # launcher and every Lamorel process, of which only RL rank 0's training loop installs handlers.
    for sig in PREEMPT_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def run_launcher(
    cmd: Sequence[str],
    run_dir: str | Path,
    poll_s: float = 0.2,
    n_rl: int = 1,
    machine_rank: int = 0,
    prog: str = "lamorel-launch",
) -> int:
    """Run Lamorel's launcher ``cmd`` in its own session and wait; return :func:`launcher_exit_code`,
    or the code of a failed process (a user error's, or :func:`sac_glam.cli.lamorel_watch.describe`'s).

    SIGTERM/SIGUSR1 received meanwhile are forwarded to RL rank 0 alone (once its pid file says it
    handles them; until then they are kept); a first SIGINT (Ctrl-C) is forwarded there as SIGTERM, so
    that it keeps the work too, a second one goes to the launcher (accelerate then stops every process).
    ``n_rl`` (the RL processes; the other ranks are LLM servers) names the ranks in a failure's line;
    ``machine_rank`` is this node's (``lamorel_args.accelerate_args.machine_rank``); ``prog`` starts
    the lines it prints (``sac-glam train`` is the same command).
    """
    from sac_glam.cli.lamorel_watch import FAILURES_ENV, describe, failures_file, take_failures

    run_dir = Path(run_dir)
    env = {**os.environ, FAILURES_ENV: str(failures_file(run_dir, machine_rank))}
    received: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        received.append(signum)

    watched = (*PREEMPT_SIGNALS, signal.SIGINT)
    previous = {sig: signal.signal(sig, on_signal) for sig in watched}
    proc = None
    try:
        proc = subprocess.Popen(
            list(cmd), start_new_session=True, preexec_fn=_ignore_preempt_signals, env=env
        )
        pending: list[int] = []
        interrupted = False
        while True:
            try:
                returncode = proc.wait(timeout=poll_s)
                break
            except subprocess.TimeoutExpired:
                pass
            while received:
                sig = received.pop(0)
                if sig == signal.SIGINT and interrupted:
                    print(f"{prog}: SIGINT again: stopping Lamorel's launcher", flush=True)
                    proc.send_signal(signal.SIGINT)
                elif sig == signal.SIGINT:
                    interrupted = True
                    print(f"{prog}: SIGINT: RL rank 0 saves a checkpoint and stops (Ctrl-C again stops "
                          "Lamorel at once, without it)", flush=True)  # fmt: skip
                    pending.append(signal.SIGTERM)
                else:
                    pending.append(sig)
            pid = rl_rank0_pid(run_dir) if pending else None
            if pid is not None:
                for sig in pending:
                    print(f"{prog}: {signal.Signals(sig).name}: forwarded to RL rank 0 (pid {pid}), "
                          f"which checkpoints and stops", flush=True)  # fmt: skip
                    with contextlib.suppress(ProcessLookupError):  # rank 0 already gone
                        os.kill(pid, sig)
                pending.clear()
    finally:
        if proc is not None and proc.poll() is None:  # lamorel-launch itself failed: do not orphan Lamorel
            proc.terminate()
            proc.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        (run_dir / RL_PID_FILE).unlink(missing_ok=True)
    from sac_glam.run.train import EXIT_PREEMPTED

    code = launcher_exit_code(returncode, run_dir)
    records = take_failures(run_dir, machine_rank)  # consumed in every case (a preemption writes one too)
    if code == EXIT_PREEMPTED:
        print(f"{prog}: RL rank 0 saved a checkpoint and stopped: exit {code} "
              f"(Lamorel's launcher exited with {returncode}); run the same command to resume", flush=True)  # fmt: skip
        return code
    failure = take_user_error(run_dir)
    if failure is not None:  # accelerate reported a failed worker above; this is why it failed
        message, code = failure
        print(f"{prog}: {_error_kind(code)}: {message}", file=sys.stderr, flush=True)
    elif records is not None and code != 0:  # a process died or crashed: which one, and how to resume
        message, code = describe(records, n_rl, run_dir)
        print(f"{prog}: {message}", file=sys.stderr, flush=True)
    return code


#: Exit codes of ``lamorel-launch`` besides the launcher's own: a config error (argparse's usage
#: code), an error of the machine (disk, permissions), Ctrl-C (128 + SIGINT, as a shell reports it).
EXIT_CONFIG, EXIT_MACHINE, EXIT_INTERRUPTED = 2, 1, 130
#: OSError codes that the machine causes, not the code: the message is then the fix.
MACHINE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EROFS})


def _error_kind(code: int) -> str:
    return "config error" if code == EXIT_CONFIG else "error"


def user_error(err: BaseException, run_dir: Path | None = None) -> tuple[str, int] | None:
    """The one-line message and exit code of an error the user can fix, or None for any other error
    (a bug, whose traceback is then shown as usual).

    Config errors and models that cannot be loaded exit with :data:`EXIT_CONFIG`; an OSError of
    :data:`MACHINE_ERRNOS` anywhere in the chain (a full disk under a checkpoint's ``torch.save``, a
    read-only file system) with :data:`EXIT_MACHINE`, naming its file or else the run directory.
    """
    # ModelLoadError lives with transformers: if that module was never imported, err is not one.
    models = sys.modules.get("sac_glam.llm.models")
    if isinstance(err, ConfigError) or (models is not None and isinstance(err, models.ModelLoadError)):
        return " ".join(str(err).split()), EXIT_CONFIG
    for cause in exception_chain(err):
        if isinstance(cause, OSError) and cause.errno in MACHINE_ERRNOS:
            where = cause.filename or (f"writing to {run_dir} (train.run_dir)" if run_dir else "a file")
            return f"{where}: {cause.strerror or os.strerror(cause.errno)}", EXIT_MACHINE
    return None


def check_run_dir(run_dir: Path) -> None:
    """Create the run directory and write a file in it, before any model is loaded or process started."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=run_dir):
            pass
    except OSError as err:
        raise ConfigError(
            f"train.run_dir={run_dir}: cannot write there ({err.strerror or err}); choose a writable directory"
        ) from err


def check_lamorel_setup(cfg: Config) -> None:
    """What every Lamorel process would fail on, checked once here: Lamorel installed, the process
    layout and ``lamorel_args`` keys, and a ``model.name`` that resolves (tiny presets always do)."""
    if importlib.util.find_spec("lamorel") is None or importlib.util.find_spec("lamorel_launcher") is None:
        from sac_glam.run.factory import make_backend

        make_backend(cfg)  # raises the install message
    from sac_glam.backends.lamorel import missing_lamorel_keys, process_layout
    from sac_glam.llm.models import TINY_PRESETS

    process_layout(cfg)
    missing = missing_lamorel_keys(cfg.lamorel_args)
    if missing:
        raise ConfigError(f"lamorel_args lacks keys Lamorel reads without defaults: {', '.join(missing)}")
    if cfg.model.name not in TINY_PRESETS:
        from transformers import AutoConfig

        try:
            AutoConfig.from_pretrained(cfg.model.name)
        except Exception as err:  # OSError, ValueError, hub errors: all mean "cannot load this name"
            raise ConfigError(
                f"model.name={cfg.model.name!r}: no model config found ({type(err).__name__}: {err})"
            ) from err


def launch_lamorel(cfg: Config, args: argparse.Namespace) -> int:
    from sac_glam.cli.lamorel_watch import failures_file
    from sac_glam.run.train import run_dir_of

    check_lamorel_setup(cfg)  # first: it says how to install lamorel, which the next import needs
    from sac_glam.backends.lamorel import process_layout

    config_path = Path(args.config_path).resolve() if args.config_path else config_dir()
    cmd = lamorel_command(cfg, args.config_name, config_path, args.overrides, rl_script_path())
    run_dir = run_dir_of(cfg).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)  # hydra's log files go there
    machine_rank = int(cfg.lamorel_args.get("accelerate_args", {}).get("machine_rank", 0))
    mine = failures_file(run_dir, machine_rank)
    for stale in (run_dir / PREEMPTED_MARKER, run_dir / RL_PID_FILE, run_dir / USER_ERROR_MARKER, mine):
        stale.unlink(missing_ok=True)  # left by a run killed outright
    print("starting Lamorel:", " ".join(cmd), flush=True)
    return run_launcher(
        cmd, run_dir, n_rl=process_layout(cfg)[0], machine_rank=machine_rank, prog=_prog(args)
    )


def parser(prog: str = "lamorel-launch") -> argparse.ArgumentParser:
    """The command's arguments; ``prog`` is the name in its usage line (``sac-glam train`` is the same command)."""
    from sac_glam import __version__
    from sac_glam.cli.keys import key_names_help

    epilog = (
        "config keys (set any as key=value; each one's type, value and docstring: --keys [PREFIX]):\n"
        + key_names_help()
        + "\n\nthe resolved config of a command, without running it: add --cfg job\n"
        "a sweep, one run after another, each in its own run directory: -m train.seed=0,1,2\n"
        "(sac-glam experiment runs the paper's studies: labels x seeds, in parallel or on SLURM)"
    )
    out = argparse.ArgumentParser(prog=prog, description=plain(__doc__), epilog=epilog,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    out.add_argument(
        "--config-name", default=DEFAULT_CONFIG, help=f"config in lamorel_configs/ (default {DEFAULT_CONFIG})"
    )
    out.add_argument(
        "--config-path",
        default=None,
        help="config directory (default: the lamorel_configs/ installed with the package)",
    )
    out.add_argument("--list", action="store_true", help="list the available configs and exit")
    out.add_argument("--cfg", "-c", metavar="job", default=None,
                     help="print the resolved config (hydra's --cfg job: overrides applied, run directory filled) and exit")  # fmt: skip
    out.add_argument("--keys", nargs="?", const="", default=None, metavar="PREFIX",
                     help="print every key (or those starting with PREFIX, e.g. sac.) with its type, its value in "
                          "this config, its default and its docstring, and exit")  # fmt: skip
    out.add_argument("-m", "--multirun", action="store_true",
                     help="sweep: run every combination of comma-separated values (train.seed=0,1,2), one after another")  # fmt: skip
    out.add_argument("--version", action="version", version=f"{prog} (sac-glam {__version__})")
    out.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.seed=1 sac.batch_size=64")
    return out


def main(argv: list[str] | None = None, prog: str = "lamorel-launch") -> int:
    args = parser(prog).parse_intermixed_args(argv)  # overrides before and after the options
    args.prog = prog
    run_dir: Path | None = None
    try:
        if args.list:
            directory = Path(args.config_path).resolve() if args.config_path else config_dir()
            if not directory.is_dir():
                raise ConfigError(f"--config-path {directory}: no such directory")
            print("\n".join(available_configs(directory)))
            return 0
        if args.cfg is not None and args.cfg not in ("job", "all"):
            raise ConfigError(
                f"--cfg {args.cfg}: not allowed; allowed: job (all prints the same: no hydra config)"
            )
        sweep = expand_sweep(args.overrides) if args.multirun else [list(args.overrides)]
        if len(sweep) > 1 and any(o.lstrip("+").startswith("train.run_dir=") for o in args.overrides):
            raise ConfigError("-m with train.run_dir: every run of a sweep needs its own directory; leave "
                              "train.run_dir out (each run gets runs/{name}/{overrides}/seed{seed})")  # fmt: skip
        try:
            configs = [resolve(args.config_name, overrides, args.config_path) for overrides in sweep]
        except ConfigError as err:
            if not args.multirun and any(len(split_sweep(o.partition("=")[2])) > 1 for o in args.overrides):
                raise ConfigError(f"{err} (to sweep comma-separated values, add -m)") from err
            raise
        if args.keys is not None:
            print(describe_keys(configs[0], args.keys), end="")
            return 0
        if args.cfg is not None:
            for overrides, cfg in zip(sweep, configs, strict=True):
                print(f"# lamorel-launch --config-name {args.config_name} {' '.join(overrides)}".rstrip())
                print(OmegaConf.to_yaml(OmegaConf.create(to_dict(cfg))), end="")
            return 0
        for i, (overrides, cfg) in enumerate(zip(sweep, configs, strict=True), 1):
            if len(sweep) > 1:
                print(f"{prog} -m: run {i}/{len(sweep)}: {' '.join(overrides)}", flush=True)
            args.overrides, run_dir = overrides, Path(cfg.train.run_dir)
            code = run_one(cfg, args)
            if code != 0:
                return code
        return 0
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:
        failure = user_error(err, run_dir)
        if failure is None:
            raise
        message, code = failure
        print(f"{prog}: {_error_kind(code)}: {message}", file=sys.stderr)
        return code


def _prog(args: argparse.Namespace) -> str:
    """The command's name in the lines it prints (:func:`main` sets it; ``sac-glam train`` is one)."""
    return str(getattr(args, "prog", "lamorel-launch"))


def announce_resume(cfg: Config, prog: str = "lamorel-launch") -> None:
    """A run directory with a checkpoint is resumed: say so before the model loads, with the keys that
    differ from its ``config.yaml`` (a longer ``train.total_steps`` extends it; other keys are refused
    by the training loop unless ``train.allow_config_change=true``)."""
    run_dir = Path(cfg.train.run_dir)
    if not any((run_dir / name).is_file() for name in ("checkpoint.pt", "checkpoint.prev.pt")):
        return
    try:
        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        saved = None
    diff = (
        config_diff(saved, to_dict(cfg), ignore=("train.run_dir",), absent=to_dict(Config()))
        if isinstance(saved, dict)
        else {}
    )
    changed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
    print(f"{prog}: {run_dir} holds a run: resuming it" + (f", with {changed}" if changed else "")
          + " (to start a new run, choose another train.run_dir)", flush=True)  # fmt: skip


def run_one(cfg: Config, args: argparse.Namespace) -> int:
    """Train one resolved config: here, or through Lamorel's launcher."""
    if cfg.train.backend == "lamorel":
        check_lamorel_setup(cfg)  # e.g. Lamorel not installed: refused before any directory is made
    check_run_dir(Path(cfg.train.run_dir))
    announce_resume(cfg, _prog(args))
    if cfg.train.backend == "lamorel":
        return launch_lamorel(cfg, args)
    return train_here(cfg)


def _time_limit(cfg: Config) -> str:
    return (
        f" or {cfg.train.time_limit_s:g} s of clock (train.time_limit_s)"
        if cfg.train.time_limit_s > 0
        else ""
    )


def train_here(cfg: Config) -> int:
    """``train.backend=local``: train in this process and print the summary."""
    from sac_glam.run.train import run_dir_of, train

    print(f"config {cfg.name}: {cfg.train.algo} on {cfg.model.name}, {cfg.env.n_envs} envs x N={cfg.env.n_objects} objects, "
          f"{cfg.train.total_steps} steps{_time_limit(cfg)} -> {run_dir_of(cfg)}", flush=True)  # fmt: skip
    result = train(cfg)
    print(f"done: {result.steps} steps in {result.run_dir}")
    if math.isnan(result.success_rate):  # no training episode ended (a run shorter than max_steps)
        print("  training episodes: none ended yet, no success rate")
    else:
        print(f"  training episodes (last {cfg.train.log_window}): success rate {result.success_rate:.3f}")
    for key, value in sorted(result.eval.items()):
        if key.endswith("success_rate") or "/success_rate/" in key:
            print(f"  {key}: {value:.3f}")
    if result.plot is not None:
        print(f"  plot: {result.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
