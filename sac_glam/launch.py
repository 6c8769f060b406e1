"""``lamorel-launch``: the training entry point.

    lamorel-launch                                   # the CPU default: SAC-GLAM+HER, N = 3, tiny-t5
    lamorel-launch --config-name sac_glam_cpu train.seed=1 train.total_steps=20000

With ``train.backend=local`` (every CPU preset) it trains in this process. With
``train.backend=lamorel`` it starts Lamorel's launcher with the absolute config directory and the RL
script (``experiments/lamorel_rl_script.py``) filled in, so that

    lamorel-launch --config-name lamorel_cpu train.total_steps=640

runs ``python -m lamorel_launcher.launch --config-path /abs/lamorel_configs --config-name lamorel_cpu
++rl_script_args.path=/abs/experiments/lamorel_rl_script.py ++train.total_steps=640 ...``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from sac_glam.config import DEFAULT_CONFIG, Config, ConfigError, available_configs, config_dir, load_config

RL_SCRIPT = Path("experiments") / "lamorel_rl_script.py"


def rl_script_path() -> Path:
    """``experiments/lamorel_rl_script.py`` of the source tree (or of the working directory), absolute."""
    candidates = [Path(__file__).resolve().parents[1] / RL_SCRIPT, Path.cwd() / RL_SCRIPT]
    for path in candidates:
        if path.is_file():
            return path.resolve()
    raise ConfigError(f"no Lamorel RL script found; looked for {', '.join(map(str, candidates))}")


def lamorel_command(cfg: Config, config_name: str, config_path: str | Path, overrides: Sequence[str],
                    script: str | Path, python: str = sys.executable) -> list[str]:  # fmt: skip
    """The ``python -m lamorel_launcher.launch`` command for a lamorel config.

    Overrides get hydra's ``++`` (set or add): our dataclass defaults make many keys valid that the
    YAML does not list, and hydra's struct mode would reject a plain ``key=value`` for those. The run
    directory is made absolute, and hydra's run directory pinned to ``.``, so that neither the launcher
    nor the processes it starts move the run elsewhere (Lamorel's launcher is a hydra app).
    """
    from sac_glam.train import run_dir_of

    plain = [o.lstrip("+") for o in overrides]
    run_dir = Path(run_dir_of(cfg)).resolve()
    return [
        python, "-m", "lamorel_launcher.launch",
        "--config-path", str(Path(config_path).resolve()), "--config-name", config_name,
        f"++rl_script_args.path={Path(script).resolve()}",
        *[f"++{o}" for o in plain if not o.startswith("train.run_dir=")],
        f"++train.run_dir={run_dir}",
        "hydra.run.dir=.", "hydra.output_subdir=null",
        # hydra's log files (the launcher's, every process's) go to the run directory, not the cwd.
        f"hydra.job_logging.handlers.file.filename={run_dir}/${{hydra.job.name}}.log",
    ]  # fmt: skip


def launch_lamorel(cfg: Config, args: argparse.Namespace) -> int:
    from sac_glam.train import run_dir_of

    if importlib.util.find_spec("lamorel") is None or importlib.util.find_spec("lamorel_launcher") is None:
        from sac_glam.factory import make_backend

        make_backend(cfg)  # raises the install message
    config_path = Path(args.config_path).resolve() if args.config_path else config_dir()
    cmd = lamorel_command(cfg, args.config_name, config_path, args.overrides, rl_script_path())
    run_dir_of(cfg).resolve().mkdir(parents=True, exist_ok=True)  # hydra's log files go there
    print("starting Lamorel:", " ".join(cmd), flush=True)
    os.execv(cmd[0], cmd)
    return 0  # not reached


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lamorel-launch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument(
        "--config-name", default=DEFAULT_CONFIG, help=f"config in lamorel_configs/ (default {DEFAULT_CONFIG})"
    )
    parser.add_argument(
        "--config-path", default=None, help="config directory (default: the repository's lamorel_configs/)"
    )
    parser.add_argument("--list", action="store_true", help="list the available configs and exit")
    parser.add_argument(
        "overrides", nargs="*", help="key=value overrides, e.g. train.seed=1 sac.batch_size=64"
    )
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(available_configs(config_dir() if args.config_path is None else None)))
        return 0
    try:
        cfg = load_config(args.config_name, args.overrides, args.config_path)
    except ConfigError as err:
        print(f"lamorel-launch: config error: {err}", file=sys.stderr)
        return 2
    if cfg.train.backend == "lamorel":
        try:
            return launch_lamorel(cfg, args)
        except ConfigError as err:
            print(f"lamorel-launch: {err}", file=sys.stderr)
            return 2
    from sac_glam.train import run_dir_of, train

    print(f"config {cfg.name}: {cfg.train.algo} on {cfg.model.name}, {cfg.env.n_envs} envs x N={cfg.env.n_objects} objects, "
          f"{cfg.train.total_steps} steps -> {run_dir_of(cfg)}", flush=True)  # fmt: skip
    result = train(cfg)
    print(f"done: {result.steps} steps in {result.run_dir}")
    print(f"  training episodes (last {cfg.train.log_window}): success rate {result.success_rate:.3f}")
    for key, value in sorted(result.eval.items()):
        if key.endswith("success_rate") or "/success_rate/" in key:
            print(f"  {key}: {value:.3f}")
    if result.plot is not None:
        print(f"  plot: {result.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
