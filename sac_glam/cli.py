"""``sac-glam``: utilities. ``sac-glam goals --split train`` lists goals; ``sac-glam bench ...`` measures;
``sac-glam experiment NAME`` runs one of the paper's studies; ``sac-glam plot DIR`` draws its figures."""

from __future__ import annotations

import argparse
import importlib
import sys

BENCHMARKS = {
    "env": "sac_glam.benchmarks.env",
    "scoring": "sac_glam.benchmarks.scoring",
    "buffer": "sac_glam.benchmarks.buffer_memory",
    "train": "sac_glam.benchmarks.train",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="sac-glam", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_goals = sub.add_parser("goals", help="print the goals of a split, one per line")
    p_goals.add_argument("--split", default="train", choices=["train", "test", "simple-train", "simple-test"])
    p_bench = sub.add_parser("bench", help="run a benchmark and print its table (extra args go to it)")
    p_bench.add_argument("name", choices=sorted(BENCHMARKS))
    # These two parse their own arguments (``sac-glam experiment -h``, ``sac-glam plot -h``).
    sub.add_parser(
        "experiment", add_help=False, help="run or submit an experiment of experiments/experiments.yaml"
    )
    sub.add_parser("plot", add_help=False, help="plot an experiment's results directory (PNG and PDF)")
    if argv[:1] in (["experiment"], ["plot"]):
        module = importlib.import_module(
            "sac_glam.experiments" if argv[0] == "experiment" else "sac_glam.plots"
        )
        return int(module.main(argv[1:]))
    args, rest = parser.parse_known_args(argv)
    if args.command == "goals":
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        from sac_glam.envs.goals import goals

        sys.stdout.write("".join(g.text + "\n" for g in goals(args.split)))
        return 0
    module = importlib.import_module(BENCHMARKS[args.name])
    module.main(rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
