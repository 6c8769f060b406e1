"""``lamorel-launch``: the training entry point.

    lamorel-launch                                   # the CPU default: SAC-GLAM+HER, N = 3, tiny-t5
    lamorel-launch --config-name sac_glam_cpu train.seed=1 train.total_steps=20000

With ``train.backend=local`` (every CPU preset) it trains in this process.
"""

from __future__ import annotations

import argparse
import sys

from sac_glam.config import DEFAULT_CONFIG, ConfigError, available_configs, config_dir, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lamorel-launch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--config-name", default=DEFAULT_CONFIG, help=f"config in lamorel_configs/ (default {DEFAULT_CONFIG})")
    parser.add_argument("--config-path", default=None, help="config directory (default: the repository's lamorel_configs/)")
    parser.add_argument("--list", action="store_true", help="list the available configs and exit")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.seed=1 sac.batch_size=64")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(available_configs(config_dir() if args.config_path is None else None)))
        return 0
    try:
        cfg = load_config(args.config_name, args.overrides, args.config_path)
    except ConfigError as err:
        print(f"lamorel-launch: config error: {err}", file=sys.stderr)
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
